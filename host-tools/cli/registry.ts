// The commands `qkt` knows, in the order `qkt --help` lists them.
import type { Command } from './command.js';
import demo from './commands/demo.js';
import terminalRun from './commands/terminal-run.js';
import status from './commands/status.js';
import bench from './commands/bench.js';
import ports from './commands/ports.js';
import inject from './commands/inject.js';
import { kmdCollect, kmdEnroll, kmdExport, kmdInit, kmdStatusCommand, kmdVoid } from './commands/kmd.js';
import { kmdEnrollCarrier, kmdSaeAdd, kmdServe } from './commands/kmd-serve.js';
import { carrierLoad, carrierStatus } from './commands/carrier.js';
import { kmdToken, zeroize } from './commands/zeroize.js';
import hilRun from './commands/hil.js';
import stationRun from './commands/station.js';
import stationCert from './commands/station-cert.js';

export const commands: readonly Command<any>[] = [
  demo,
  ports,
  status,
  inject,
  zeroize,
  carrierLoad,
  carrierStatus,
  kmdInit,
  kmdEnroll,
  kmdExport,
  kmdCollect,
  kmdStatusCommand,
  kmdVoid,
  kmdServe,
  kmdSaeAdd,
  kmdEnrollCarrier,
  kmdToken,
  stationRun,
  stationCert,
  terminalRun,
  hilRun,
  bench,
];
