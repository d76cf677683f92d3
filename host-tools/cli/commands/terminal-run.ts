// `qkt terminal run`: an emulated terminal crypto module serving on a serial device or TCP, as
// the module in a distribution terminal would, until Ctrl-C. It refuses a flash image group or
// others can read (the image holds the device key in the clear) unless --allow-shared-image.
import { defineCommand, int, str, CliError, Exit } from '../command.js';
import { startTerminalHost } from '../../terminal-host.js';
import { readableByOthers, sharedSecretsWarning } from '../../secret-file.js';
import { MissingImageError, requireImage } from '../../flash-image.js';

export interface TerminalRunResult {
  event: 'ready';
  port: string;
  flash: string;
  terminalId: string | null;
  enrolled: boolean;
  pid: number;
}

export default defineCommand<TerminalRunResult>({
  async run(v, _p, io) {
    const port = str(v, 'port');
    const listen = str(v, 'listen');
    if (!port === !listen) throw new CliError('give exactly one of --port PATH or --listen tcp:HOST:PORT', Exit.USAGE);
    const baud = int(v, 'baud', 300, 12_000_000);
    const powerCutAfter = int(v, 'power-cut-after', 1);
    const flash = str(v, 'flash')!;
    const createImage = v['create-image'] === true;
    try {
      requireImage(flash, createImage); // a mistyped --flash makes no image
    } catch (e) {
      if (e instanceof MissingImageError) throw new CliError(e.message, Exit.STATE);
      throw e;
    }
    if (readableByOthers(flash)) {
      if (v['allow-shared-image'] !== true) {
        throw new CliError(`flash image ${flash} holds the device key and group or others can read it; fix: chmod 600 ${flash} (or pass --allow-shared-image)`, Exit.STATE);
      }
      process.stderr.write(`qkt: ${sharedSecretsWarning([flash])!}\n`);
    }
    const host = await startTerminalHost({
      flashPath: flash,
      createImage,
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
