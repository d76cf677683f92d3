// `qkt terminal run`: an emulated terminal crypto module serving on a serial device or TCP, as
// the module in a distribution terminal would, until Ctrl-C. It refuses a flash image group or
// others can read (the image holds the device key in the clear) unless --allow-shared-image.
import { defineCommand, int, str, CliError, Exit } from '../command.js';
import { startTerminalHost } from '../../terminal-host.js';
import { readableByOthers, sharedSecretsWarning } from '../../secret-file.js';

export interface TerminalRunResult {
  event: 'ready';
  port: string;
  flash: string;
  terminalId: string | null;
  enrolled: boolean;
  pid: number;
}

export default defineCommand<TerminalRunResult>({
  path: ['terminal', 'run'],
  summary: 'run an emulated terminal module on a serial device or TCP',
  usage: 'qkt terminal run --flash FILE (--port PATH | --listen tcp:HOST:PORT) [--baud N] [--power-cut-after N] [--allow-shared-image]',
  examples: [
    'qkt terminal run --flash t1.img --port /dev/pts/4',
    'qkt terminal run --flash t1.img --listen tcp:127.0.0.1:7000 --baud 115200',
    'qkt terminal run --flash t1.img --port /dev/pts/4 --power-cut-after 500',
    'qkt terminal run --flash t1.img --port /dev/pts/4 --allow-shared-image   # start on an image group/others can read (a warning, no refusal)',
  ],
  options: {
    flash: { type: 'string' },
    port: { type: 'string' },
    listen: { type: 'string' },
    baud: { type: 'string' },
    'power-cut-after': { type: 'string' },
    'allow-shared-image': { type: 'boolean', default: false },
  },
  required: ['flash'],
  async run(v, _p, io) {
    const port = str(v, 'port');
    const listen = str(v, 'listen');
    if (!port === !listen) throw new CliError('give exactly one of --port PATH or --listen tcp:HOST:PORT', Exit.USAGE);
    const baud = int(v, 'baud', 300, 12_000_000);
    const powerCutAfter = int(v, 'power-cut-after', 1);
    const flash = str(v, 'flash')!;
    if (readableByOthers(flash)) {
      if (v['allow-shared-image'] !== true) {
        throw new CliError(`flash image ${flash} holds the device key and group or others can read it; fix: chmod 600 ${flash} (or pass --allow-shared-image)`, Exit.STATE);
      }
      process.stderr.write(`qkt: ${sharedSecretsWarning([flash])!}\n`);
    }
    const host = await startTerminalHost({
      flashPath: flash,
      ...(port ? { port } : { listen: listen! }),
      ...(baud ? { baud } : {}),
      ...(powerCutAfter ? { powerCutAfter } : {}),
      onPowerCut: () => {
        // As after a power loss: no goodbye, no flush, the process is simply gone.
        process.stderr.write('qkt: power cut (fault injection)\n');
        process.exit(137);
      },
    });
    const st = host.status();
    const result: TerminalRunResult = {
      event: 'ready',
      port: host.address,
      flash,
      terminalId: (st['terminalId'] as string | null) ?? null,
      enrolled: st['enrolled'] === true,
      pid: process.pid,
    };
    io.ready(result, `terminal ${result.terminalId ?? '(not enrolled)'} serving on ${host.address}; Ctrl-C to stop`);
    await Promise.race([io.stopped, host.closed]);
    await host.close();
    return result;
  },
});
