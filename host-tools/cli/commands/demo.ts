// `qkt demo`: the main job on the embedded default, in one process (or over a socat pty pair
// with --pty), with a summary of what the parts exchanged.
import { defineCommand, CliError, Exit } from '../command.js';
import { runDemo } from '../../demo.js';
import type { DemoResult } from '../../demo.js';

export default defineCommand<DemoResult>({
  path: ['demo'],
  summary: 'run the whole chain on this machine and print what happened',
  usage: 'qkt demo [--pty] [--json]',
  examples: ['qkt demo', 'qkt demo --pty', 'qkt demo --json'],
  options: { pty: { type: 'boolean', default: false } },
  async run(v) {
    const r = await runDemo({ transport: v['pty'] ? 'pty' : 'inproc' });
    if (!r.bulk.checksumOk) throw new CliError('demo transfer arrived corrupt', Exit.FAILURE);
    return r;
  },
  render: (r) =>
    [
      `qkt demo over ${r.transport}`,
      ...r.steps.map((s) => `  ${s.step.padEnd(10)} ${s.detail}`),
      `  terminal   received ${r.link.framesReceivedByTerminal} frames, ${r.link.corruptFrames} corrupt`,
      'ok',
    ].join('\n'),
});
