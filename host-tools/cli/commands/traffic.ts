// `qkt traffic`: a terminal's service traffic to the master station, as its front end sends it
// (docs/traffic.md): the messages of a user class (A-E) sealed by the module on the port and sent
// as the terminal's uplinks to a running station, with access delay, cipher rate, key use rate
// and packet loss measured. The work is in host-tools/station/traffic.ts.
import { CliError, defineCommand, durationOption, Exit, int, str } from '../command.js';
import { beforeUplinks } from '../../station/client.js';
import { CLASSES, isClassId, runTraffic } from '../../station/traffic.js';
import type { TrafficResult } from '../../station/traffic.js';
import { parseRate } from '../../units.js';
import { resolvePort } from '../port-select.js';
import { AEAD_SUITES } from '../../../firmware/crypto/suites.js';
import type { AeadSuite } from '../../../firmware/crypto/suites.js';
import { withStationAndTerminal } from './station-client.js';

export interface TrafficCommandResult extends TrafficResult {
  port: string;
  station: string;
}

export const traffic = defineCommand<TrafficCommandResult>({
  async run(v, _p, io) {
    const cls = str(v, 'class')!;
    if (!isClassId(cls)) throw new CliError(`--class must be one of A, B, C, D, E, got ${JSON.stringify(cls)}`, Exit.USAGE);
    const mode = str(v, 'mode') ?? 'otp';
    if (mode !== 'otp' && mode !== 'aead') throw new CliError(`--mode must be otp or aead, got ${JSON.stringify(mode)}`, Exit.USAGE);
    const suite = str(v, 'suite');
    if (suite !== undefined && !(AEAD_SUITES as readonly string[]).includes(suite)) throw new CliError(`--suite must be one of ${AEAD_SUITES.join(', ')}, got ${JSON.stringify(suite)}`, Exit.USAGE);
    if (suite !== undefined && mode !== 'aead') throw new CliError('--suite goes with --mode aead (OTP has no suite)', Exit.USAGE);
    const durationS = durationOption(v, 'seconds', 60, 0.1, 30 * 86_400);
    const tS = durationOption(v, 't', 60, 0.01, 86_400);
    const deadlineS = durationOption(v, 'deadline', 3, 0.001, 3600);
    let supply: number;
    try {
      supply = parseRate(str(v, 'supply') ?? '11kbit/s');
    } catch (e) {
      throw new CliError(`--supply: ${(e as Error).message}`, Exit.USAGE);
    }
    if (!(supply > 0)) throw new CliError('--supply must be above 0', Exit.USAGE);
    const seed = int(v, 'seed', 0, 0xffff_ffff) ?? 1;
    const port = await resolvePort(str(v, 'port')!, str(v, 'vidpid'));
    const baud = int(v, 'baud', 300, 12_000_000);
    return withStationAndTerminal(v, port, baud, async (terminal, station) => {
      const terminalId = await beforeUplinks(terminal, station.client, station.caller);
      const r = await runTraffic({
        terminal,
        station: station.client,
        terminalId,
        cls: CLASSES[cls],
        tMs: tS * 1000,
        durationMs: durationS * 1000,
        seed,
        mode,
        ...(suite !== undefined ? { suite: suite as AeadSuite } : {}),
        supplyBitsPerSecond: supply,
        deadlineMs: deadlineS * 1000,
        onMessage: (done, total) => io.progress.update(done, total, `class ${cls} traffic of ${terminalId}`, 'message'),
        signal: io.signal,
      });
      io.progress.done();
      return { port, station: station.address, ...r };
    });
  },
  outcome(r) {
    if (r.stoppedBy === 'stopped') return { exitCode: 130, reason: `stopped by a signal after ${r.messages} messages (the result above counts them)` };
    if (r.stoppedBy === 'KEYS_EXHAUSTED') return { exitCode: Exit.STATE, reason: `the terminal's key pool ran dry after ${r.messages} messages: load a batch for it and inject it (qkt status --class ${r.class} forecasts the next visit)` };
    if (r.failed > 0) return { exitCode: Exit.FAILURE, reason: `${r.failed} of ${r.messages} messages were refused or not answered: ${Object.entries(r.failures).map(([k, n]) => `${n} ${k}`).join(', ')}` };
    return undefined;
  },
  render(r) {
    const d = r.accessDelayMs;
    return [
      `class ${r.class} (${CLASSES[r.class].name}) traffic of ${r.terminalId} (${r.port}) to the station ${r.station}, ${r.mode}${r.suite ? ` ${r.suite}` : ''}, T = ${r.tMs / 1000} s, ${r.seconds} s:`,
      `  ${r.messages} messages: ${r.delivered} opened in time, ${r.late} late, ${r.failed} refused or unanswered (loss ${(r.lossRate * 100).toFixed(2)}%)${r.stoppedBy === 'KEYS_EXHAUSTED' ? '; stopped: the key pool ran dry' : r.stoppedBy === 'stopped' ? '; stopped early (a signal)' : ''}`,
      `  access delay: ${d ? `median ${(d.median / 1000).toFixed(3)} s, p99 ${(d.p99 / 1000).toFixed(3)} s, max ${(d.max / 1000).toFixed(3)} s` : 'none opened'}`,
      `  cipher rate ${(r.cipherBitsPerSecond / 1000).toFixed(2)} kbit/s; key ${(r.keyBitsPerSecond / 1000).toFixed(2)} kbit/s, key use rate ${r.keyUseRate.toFixed(3)} of the ${r.supplyBitsPerSecond / 1000} kbit/s supply`,
    ].join('\n');
  },
});
