// The commands `qkt` knows, in the order `qkt --help` lists them.
import type { Command } from './command.js';
import demo from './commands/demo.js';
import terminalRun from './commands/terminal-run.js';
import status from './commands/status.js';

import bench from './commands/bench.js';
import ports from './commands/ports.js';

export const commands: readonly Command<any>[] = [demo, status, ports, terminalRun, bench];
