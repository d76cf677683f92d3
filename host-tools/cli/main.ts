// `qkt` entry: finds the command named by the first words, parses its options, runs it, and
// prints its result (human lines, or exactly one JSON document under --json). A failure is one
// line on stderr and a stable non-zero exit code (command.ts `Exit`).
import { readFileSync } from 'node:fs';
import { Exit } from './command.js';
import type { CommandSpec, Io, Values } from './command.js';
import { commands } from './registry.js';
import { commandHelp, formatCommandHelp, formatListHelp, groupMembers, listHelp } from './help.js';
import { parseCommandLine, UsageError } from './argv.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function findCommand(argv: string[]): { command: CommandSpec; rest: string[] } | undefined {
  let best: CommandSpec | undefined;
  for (const c of commands) {
    if (c.path.every((w, i) => argv[i] === w) && (!best || c.path.length > best.path.length)) best = c;
  }
  return best ? { command: best, rest: argv.slice(best.path.length) } : undefined;
}

/** The longest run of leading words that names a group of commands (`kmd`, `kmd sae`), or []. */
function findGroup(argv: string[]): string[] {
  let words: string[] = [];
  for (let n = 1; n <= argv.length && !argv[n - 1]!.startsWith('-'); n++) {
    if (groupMembers(commands, argv.slice(0, n)).length > 0) words = argv.slice(0, n);
  }
  return words;
}

/** How long a command may take to stop after the first SIGINT/SIGTERM before main ends it. */
const STOP_GRACE_MS = 2000;

export async function main(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const asksHelp = argv.includes('--help') || argv.includes('-h');
  const fail = (message: string, code: number): number => {
    process.stderr.write(`qkt: ${message.split('\n')[0]}\n`);
    if (json) process.stdout.write(JSON.stringify({ error: { message, exitCode: code } }) + '\n');
    return code;
  };
  const print = (doc: unknown, text: string): number => {
    process.stdout.write((json ? JSON.stringify(doc) : text) + '\n');
    return Exit.OK;
  };
  const printList = (words: string[]) => {
    const h = listHelp(commands, words);
    return print(h, formatListHelp(h));
  };
  const printCommand = (c: CommandSpec) => {
    const h = commandHelp(c);
    return print(h, formatCommandHelp(h));
  };
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || (argv[0] === '--json' && (asksHelp || argv.length === 1))) return printList([]);
  if (argv[0] === 'help') {
    const words = argv.slice(1).filter((a) => !a.startsWith('-'));
    const sub = findCommand(words);
    if (sub && sub.rest.length === 0) return printCommand(sub.command);
    const group = findGroup(words);
    if (group.length === words.length) return printList(group);
    return fail(`no command "${words.join(' ')}"; run qkt --help`, Exit.USAGE);
  }
  if (argv[0] === '--version' || argv[0] === '-V' || argv[0] === 'version') {
    return print({ version: version() }, `qkt ${version()}`);
  }
  if (argv[0]!.startsWith('-')) return fail(`unknown option ${argv[0]} before a command; run qkt --help`, Exit.USAGE);
  const found = findCommand(argv);
  if (!found) {
    const group = findGroup(argv);
    if (group.length === 0) return fail(`unknown command "${argv.filter((a) => !a.startsWith('-')).slice(0, 2).join(' ')}"; run qkt --help`, Exit.USAGE);
    if (argv.length === group.length || argv.slice(group.length).every((a) => a.startsWith('-'))) {
      // `qkt kmd --help` asked for the list; `qkt kmd` alone ran nothing, so a script that built
      // `qkt kmd $SUB` with an empty $SUB must not read it as done: the list, on stderr, exit 2.
      if (asksHelp) return printList(group);
      const h = listHelp(commands, group);
      const code = fail(`"qkt ${h.group}" needs a command: ${h.commands.map((c) => c.command.split(' ').slice(group.length).join(' ')).join(', ')}; run qkt ${h.group} --help`, Exit.USAGE);
      if (!json) process.stderr.write('\n' + formatListHelp(h) + '\n');
      return code;
    }
    const g = group.join(' ');
    const names = groupMembers(commands, group).map((c) => c.path.slice(group.length).join(' '));
    return fail(`unknown command "${argv.slice(0, group.length + 1).join(' ')}": qkt ${g} has ${names.join(', ')}; run qkt ${g} --help`, Exit.USAGE);
  }
  const { command, rest } = found;
  const beforeTerminator = rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
  if (beforeTerminator.includes('--help') || beforeTerminator.includes('-h')) return printCommand(command);

  let values: Values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseCommandLine(command, rest));
  } catch (e) {
    if (e instanceof UsageError) return fail(e.message, Exit.USAGE);
    throw e;
  }
  for (const r of command.required ?? []) {
    if (values[r] === undefined) return fail(`--${r} is required; usage: ${command.usage}`, Exit.USAGE);
  }

  // Only now the command's modules (and the lock, progress and error helpers) load: help and usage
  // errors above stay fast to start.
  const [impl, { setLockCommand }, { ttyProgress }, { StoppedError }] = await Promise.all([command.load(), import('../lock.js'), import('./progress.js'), import('../link/stop.js')]);
  // Locks this command takes name it: "KMD home H is in use by pid N (qkt carrier load, ...)".
  const name = `qkt ${command.path.join(' ')}`;
  setLockCommand(name);
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const abort = new AbortController();
  // The first SIGINT/SIGTERM asks the command to stop cleanly: io.stopped resolves and io.signal
  // aborts (a transfer stops at a chunk boundary, the command unwinds releasing its locks and
  // says what state things are in). A command still running STOP_GRACE_MS later is ended here
  // with exit 130/143 (the locks' exit hook releases them); a second signal ends it at once.
  let signalled: NodeJS.Signals | undefined;
  let graceTimer: NodeJS.Timeout | undefined;
  // The module keeps what it staged (docs/protocol.md 5.4): the same inject run again goes on from there.
  const resumeHint = name === 'qkt inject' ? '; the terminal keeps what it received: the same qkt inject resumes' : '';
  const signalExit = (sig: NodeJS.Signals) => (sig === 'SIGTERM' ? Exit.TERMINATED : Exit.INTERRUPTED);
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) {
      io.progress.done();
      fail(`stopped at once (${sig} again): ${name} ended before it finished${resumeHint}`, signalExit(sig));
      process.exit(signalExit(sig));
    }
    signalled = sig;
    abort.abort(new StoppedError(sig));
    stop();
    graceTimer = setTimeout(() => {
      io.progress.done();
      fail(`stopped (${sig}): ${name} ended before it finished${resumeHint}`, signalExit(sig));
      process.exit(signalExit(sig));
    }, STOP_GRACE_MS);
    graceTimer.unref();
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
    progress: ttyProgress(process.stderr, json ? 'off' : process.stderr.isTTY === true ? 'tty' : 'lines'),
    stopped,
    signal: abort.signal,
    ready: (result, human) => {
      readyPrinted = true;
      process.stdout.write(json ? JSON.stringify(result) + '\n' : human + '\n');
    },
  };
  try {
    const result = await impl.run(values, positionals, io);
    io.progress.done();
    if (!readyPrinted) {
      if (json) process.stdout.write(JSON.stringify(result) + '\n');
      else if (impl.render) process.stdout.write(impl.render(result) + '\n');
    }
    const partial = impl.outcome?.(result);
    if (partial) {
      process.stderr.write(`qkt: ${partial.reason}\n`);
      return partial.exitCode;
    }
    return Exit.OK;
  } catch (e) {
    io.progress.done();
    // The error mapping (and every error class it knows) loads only when something failed.
    const { describeError } = await import('./errors.js');
    let { message, exitCode } = describeError(e);
    // Failing while stopping on request: the stop is the reason (the command's words follow).
    if (signalled && !(e instanceof StoppedError)) ({ message, exitCode } = { message: `stopped (${signalled}): ${message}`, exitCode: signalExit(signalled) });
    // A value the command or a library refused (`--bits -1`, `--port tcp:nope`): show the right form too.
    const form = exitCode === Exit.USAGE && !message.includes('usage: ') ? `; usage: ${command.usage}` : '';
    return fail(message + form, exitCode);
  } finally {
    clearTimeout(graceTimer);
    // Finished, its result printed: a signal from now until the process ends (Ctrl-C pressed as
    // the command ended, or caught during its last synchronous work and not yet dispatched) must
    // not kill it by the default action (exit 130 after "added"; a script then runs the load
    // again): it ends the process with the command's own exit code. Added before the command's
    // handler is removed, so the signal is never without a handler in between.
    process.on('SIGINT', afterFinish);
    process.on('SIGTERM', afterFinish);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** A signal after the command finished: the exit code is the command's (bin/qkt.js sets it). */
function afterFinish(): void {
  process.exit();
}

