// `qkt demo`: the main job on the embedded default: KMD, carrier, three terminals and the master
// station in one process (or the terminals on socat pty pairs with --pty), with a summary.
import { defineCommand, str, CliError, Exit } from '../command.js';
import { runDemo } from '../../demo.js';
import type { DemoResult } from '../../demo.js';
import { formatBits } from '../../units.js';

export default defineCommand<DemoResult>({
  async run(v, _p, io) {
    const r = await runDemo({
      transport: v['pty'] ? 'pty' : 'inproc',
      ...(str(v, 'keep') ? { keep: str(v, 'keep')! } : {}),
      log: io.note,
      progress: (d, t, l) => io.progress.update(d, t, l),
    });
    if (!r.ok) throw new CliError('demo failed: a message did not open to what was sent, or the two sides used different keys', Exit.FAILURE);
    return r;
  },
  render: (r) =>
    [
      '',
      `qkt demo: KMD ${r.kmdId}, carrier ${r.carrierId}, terminals on ${r.transport}`,
      '',
      '| terminal | injected | inject s | OTP up | AEAD up | AEAD down | key bits used (terminal = station) |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...r.terminals.map((t) => `| ${t.terminalId} | ${formatBits(t.injectedBits)} | ${t.injectSeconds.toFixed(2)} | ${t.otpUplinks} | ${t.aeadUplinks} | ${t.aeadDownlinks} | ${t.terminalConsumedBits} = ${t.stationConsumedBits} |`),
      '',
      `${r.receiptsCollected} receipts collected; ${formatBits(r.stationActivatedBits)} of station keys activated.`,
      '',
      `Service traffic, ${r.traffic.seconds} s at T = 1 min, each terminal over a shaped ${r.traffic.linkBitsPerSecond / 1000} kbit/s link to the station (OTP; a small Table I, docs/traffic.md):`,
      '',
      '| terminal | class | messages | access delay median s | cipher rate kbit/s | key use rate | packet loss % | pool lasts (offline only) |',
      '|---|---|---:|---:|---:|---:|---:|---:|',
      ...r.traffic.rows.map(
        (x) =>
          `| ${x.terminalId} | ${x.class} | ${x.messages} | ${((x.accessDelayMs?.median ?? 0) / 1000).toFixed(3)} | ${(x.cipherBitsPerSecond / 1000).toFixed(2)} | ${x.keyUseRate.toFixed(3)} | ${(x.lossRate * 100).toFixed(2)} | ${x.forecast.secondsLeft === null ? 'does not run dry' : `${Math.floor(x.forecast.secondsLeft / 60)} min`} |`,
      ),
      '',
      'At these classes an offline batch lasts minutes: the paper pairs it with the 11 kbit/s online supply (qkt status --class C --online 11kbit/s).',
      '',
      'Every message opened to what was sent; no key was used twice. ok',
    ].join('\n'),
});
