// `qkt fleet run`: N emulated terminal modules in this process, enrolled and loaded through the
// real KMD and carrier formats, each sending a user class's traffic to one station on loopback
// mutual TLS; a table per class at the end. The work is in host-tools/fleet/fleet.ts.
import { bitsOption, CliError, defineCommand, durationOption, Exit, int, str } from '../command.js';
import { CLASSES } from '../../station/traffic.js';
import { DEFAULT_MIX, MAX_FLEET_TERMINALS, checkFleetOptions, parseMix, runFleet } from '../../fleet/fleet.js';
import type { FleetPhase, FleetResult, FleetRow, FleetOptions } from '../../fleet/fleet.js';
import { InputError } from '../../input-error.js';
import { formatBits } from '../../units.js';

const PHASE: Record<FleetPhase, [string, string]> = {
  enrol: ['enrolling modules', 'terminal'],
  inject: ['injecting batches', 'terminal'],
  connect: ['connecting to the station', 'terminal'],
  traffic: ['service traffic', 'message'],
};

const mib = (b: number) => (b / 2 ** 20).toFixed(1);
const sec = (ms: number | undefined) => (ms === undefined ? '-' : (ms / 1000).toFixed(3));

export default defineCommand<FleetResult>({
  async run(v, _p, io) {
    const n = int(v, 'terminals', 1, MAX_FLEET_TERMINALS)!;
    const seconds = durationOption(v, 'seconds', 30, 0.1, 86_400);
    const tS = durationOption(v, 't', 60, 0.01, 86_400);
    const seed = int(v, 'seed', 0, 0xffff_ffff) ?? 1;
    const bits = bitsOption(v, 'bits');
    const home = str(v, 'home');
    const store = str(v, 'store') ?? 'sqlite';
    const station = str(v, 'station') ?? 'process';
    if (station !== 'process' && station !== 'inline') throw new CliError(`--station must be process or inline, got ${JSON.stringify(station)}`, Exit.USAGE);
    const rateText = str(v, 'rate');
    let ratePerSecond: number | undefined;
    if (rateText !== undefined) {
      const per = /^\s*(\d+(?:\.\d+)?)\s*(?:\/\s*(s|min|t|T))?\s*$/.exec(rateText);
      const x = per ? Number(per[1]) / (per[2] === 'min' ? 60 : per[2] === 't' || per[2] === 'T' ? tS : 1) : NaN;
      if (!(x > 0 && x <= 1000)) throw new CliError(`--rate must be messages per terminal: a number per second above 0 and up to 1000, or N/s, N/min, N/T (1/T: one per interval T), got ${JSON.stringify(rateText)}`, Exit.USAGE);
      ratePerSecond = x;
    }
    if (store !== 'sqlite' && store !== 'files') throw new CliError(`--store must be sqlite or files, got ${JSON.stringify(store)}`, Exit.USAGE);
    let o: FleetOptions;
    try {
      o = { terminals: n, seconds, tMs: tS * 1000, seed, mix: parseMix(str(v, 'mix') ?? DEFAULT_MIX), store, station, ...(ratePerSecond !== undefined ? { ratePerSecond } : {}), ...(bits !== undefined ? { bits } : {}), ...(home !== undefined ? { home } : {}) };
      checkFleetOptions(o);
    } catch (e) {
      if (e instanceof InputError) throw new CliError(e.message, Exit.USAGE);
      throw e;
    }
    const r = await runFleet({
      ...o,
      signal: io.signal,
      onProgress: (phase, done, total) => {
        const [label, unit] = PHASE[phase];
        io.progress.update(done, total, label, unit);
        if (phase !== 'traffic' && done === total) io.progress.done();
      },
    });
    io.progress.done();
    return r;
  },
  outcome(r) {
    if (!r.keysAgree) return { exitCode: Exit.FAILURE, reason: `${r.keyMismatches} of ${r.terminals} terminals: the module's consumed key bits differ from the station's account` };
    if (r.overall.failed > 0) return { exitCode: Exit.FAILURE, reason: `${r.overall.failed} of ${r.overall.messages} messages were refused or not answered: ${Object.entries(r.failures).map(([k, x]) => `${x} ${k}`).join(', ')}` };
    return undefined;
  },
  render(r) {
    const line = (x: FleetRow) =>
      `| ${x.class === 'all' ? 'all' : `${x.class} ${CLASSES[x.class].name}`} | ${x.terminals} | ${x.messages} | ${x.delivered} | ${x.late} | ${x.failed} | ${sec(x.accessDelayMs?.median)} | ${sec(x.accessDelayMs?.p99)} | ${(x.cipherBitsPerSecondPerTerminal / 1000).toFixed(2)} | ${x.keyUseRatePerTerminal.toFixed(3)} |`;
    return [
      `qkt fleet: ${r.terminals} terminals in one process, ${formatBits(r.bits)} each (images of ${r.images.sectors} sectors, ${r.images.bytes / 1024} KiB, in ${r.images.where}), ${r.stationConnections} mutual-TLS connections to one station (${r.station === 'process' ? 'its own process' : 'in this process'}, its keys ${r.store === 'sqlite' ? 'in one SQLite database' : 'in a pool image per terminal'}); OTP, T = ${r.tMs / 1000} s, ${r.ratePerSecond !== null ? `${+r.ratePerSecond.toPrecision(4)} messages/s per terminal, ` : ''}${r.seconds} s of traffic`,
      '',
      '| class | terminals | messages | opened in time | late | failed | delay median s | delay p99 s | cipher kbit/s per terminal | key use rate per terminal |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...r.classes.map(line),
      line(r.overall),
      '',
      `setup ${r.setupSeconds.toFixed(1)} s (enrol, export, carrier, inject, collect, connect); traffic ${r.trafficSeconds.toFixed(1)} s`,
      `RSS ${mib(r.rss.beforeBytes)} MiB before, ${mib(r.rss.afterSetupBytes)} MiB set up, ${mib(r.rss.afterBytes)} MiB after: ${(r.rss.perTerminalBytes / 1024).toFixed(0)} KiB per terminal`,
      r.keysAgree ? `keys agree: every module consumed the key bits the station's account says` : `keys DISAGREE for ${r.keyMismatches} terminals`,
      ...(r.home ? [`kept in ${r.home}`] : []),
    ].join('\n');
  },
});
