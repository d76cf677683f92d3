// `qkt` entry: finds the command named by the first words, parses its options, runs it, and
// prints its result (human lines, or exactly one JSON document under --json). A failure is one
// line on stderr and a stable non-zero exit code (command.ts `Exit`).
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { Exit, CliError } from './command.js';
import type { Command, Io, OptionSpec, Values } from './command.js';
import { ttyProgress } from './progress.js';
import { describeError } from './errors.js';
import { commands } from './registry.js';
import { setLockCommand } from '../lock.js';

const GLOBAL: OptionSpec = {
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
};

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function findCommand(argv: string[]): { command: Command; rest: string[] } | undefined {
  let best: Command | undefined;
  for (const c of commands) {
    if (c.path.every((w, i) => argv[i] === w) && (!best || c.path.length > best.path.length)) best = c;
  }
  return best ? { command: best, rest: argv.slice(best.path.length) } : undefined;
}

export function helpText(): string {
  const width = Math.max(...commands.map((c) => c.path.join(' ').length));
  return [
    'qkt: quantum keys for distribution terminals (KMD, carrier, terminal module, master station)',
    '',
    'Usage: qkt <command> [options]     (every command takes --json and --help)',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.path.join(' ').padEnd(width)}  ${c.summary}`),
    '',
    'State lives in a home folder: --home DIR or QKT_HOME.',
    'Run `qkt <command> --help` for its options and examples. Docs: README.md, docs/.',
  ].join('\n');
}

function commandHelp(c: Command): string {
  return [`qkt ${c.path.join(' ')}: ${c.summary}`, '', `Usage: ${c.usage}`, '', 'Examples:', ...c.examples.map((e) => `  ${e}`)].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const fail = (message: string, code: number): number => {
    process.stderr.write(`qkt: ${message.split('\n')[0]}\n`);
    if (json) process.stdout.write(JSON.stringify({ error: { message, exitCode: code } }) + '\n');
    return code;
  };
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    const sub = argv[0] === 'help' ? findCommand(argv.slice(1)) : undefined;
    process.stdout.write((sub ? commandHelp(sub.command) : helpText()) + '\n');
    return Exit.OK;
  }
  if (argv[0] === '--version' || argv[0] === '-V' || argv[0] === 'version') {
    process.stdout.write(json ? JSON.stringify({ version: version() }) + '\n' : `qkt ${version()}\n`);
    return Exit.OK;
  }
  const found = findCommand(argv);
  if (!found) return fail(`unknown command "${argv.filter((a) => !a.startsWith('-')).slice(0, 2).join(' ')}"; run qkt --help`, Exit.USAGE);
  const { command, rest } = found;

  let values: Values;
  let positionals: string[];
  try {
    const parsed = parseArgs({ args: rest, options: { ...GLOBAL, ...command.options }, allowPositionals: true, strict: true });
    values = parsed.values as Values;
    positionals = parsed.positionals;
  } catch (e) {
    return fail(`${(e as Error).message.replace(/\. To specify.*$/, '')}; see qkt ${command.path.join(' ')} --help`, Exit.USAGE);
  }
  if (values['help']) {
    process.stdout.write(commandHelp(command) + '\n');
    return Exit.OK;
  }
  for (const r of command.required ?? []) {
    if (values[r] === undefined) return fail(`--${r} is required; usage: ${command.usage}`, Exit.USAGE);
  }

  // Locks this command takes name it: "KMD home H is in use by pid N (qkt carrier load, ...)".
  setLockCommand(`qkt ${command.path.join(' ')}`);
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  // The first SIGINT/SIGTERM asks the command to stop cleanly (it unwinds, releasing its locks);
  // a second one ends the process at once (the 'exit' hook still releases the locks).
  let signalled = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signalled > 1) process.exit(sig === 'SIGINT' ? 130 : 143);
    stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let readyPrinted = false;
  const io: Io = {
    json,
    note: (line) => {
      if (!json) process.stderr.write(line + '\n');
    },
    log: (line) => void process.stderr.write(line + '\n'),
    progress: ttyProgress(process.stderr, !json && process.stderr.isTTY === true),
    stopped,
    ready: (result, human) => {
      readyPrinted = true;
      process.stdout.write(json ? JSON.stringify(result) + '\n' : human + '\n');
    },
  };
  try {
    const result = await command.run(values, positionals, io);
    io.progress.done();
    if (!readyPrinted) {
      if (json) process.stdout.write(JSON.stringify(result) + '\n');
      else if (command.render) process.stdout.write(command.render(result) + '\n');
    }
    const partial = command.outcome?.(result);
    if (partial) {
      process.stderr.write(`qkt: ${partial.reason}\n`);
      return partial.exitCode;
    }
    return Exit.OK;
  } catch (e) {
    io.progress.done();
    const { message, exitCode } = describeError(e);
    return fail(message, exitCode);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export { CliError };
