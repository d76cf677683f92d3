// The command line refuses what it does not understand (exit 2, the reason and the right form,
// nothing changed), group words list their commands, help describes every option (text and
// --json), and help and usage errors load no command implementation. The CLI runs as a user runs it.
import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { runQkt, QKT_BIN } from '../../hil/cli.js';
import { commands } from './registry.js';
import type { CommandHelp, ListHelp } from './help.js';

const json = <T>(s: string): T => JSON.parse(s) as T;

t.test('carrier load --terminal T1 T2: exit 2 naming --terminal T1 --terminal T2; nothing exported, no carrier made', async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  const car = join(dir, 'car');
  t.equal((await runQkt(['kmd', 'init', '--home', home, '--stock', '9Mbit'])).code, 0);
  for (const id of ['T1', 'T2']) t.equal((await runQkt(['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', join(dir, `${id}.img`)])).code, 0);
  // The ledger, without the supply's available bits (they grow with the clock).
  const ledger = async () => {
    const s = json<{ supply: { takenBits: number }; terminals: unknown; batches: unknown; totals: unknown }>((await runQkt(['kmd', 'status', '--home', home, '--json'])).stdout);
    return { taken: s.supply.takenBits, terminals: s.terminals, batches: s.batches, totals: s.totals };
  };
  const before = await ledger();

  const r = await runQkt(['carrier', 'load', '--init', '--home', home, '--carrier', car, '--terminal', 'T1', 'T2', '--bits', '1Mbit']);
  t.equal(r.code, 2);
  t.match(r.stderr, /^qkt: unexpected argument "T2": --terminal takes one value each time; give it again: --terminal T1 --terminal T2; usage: qkt carrier load /);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.notOk(existsSync(car), 'no carrier folder made');
  t.same(await ledger(), before, 'KMD home unchanged: nothing exported');

  // The form the message names works: the refusal above was the stray argument's, nothing else.
  const ok = await runQkt(['carrier', 'load', '--init', '--home', home, '--carrier', car, '--terminal', 'T1', '--terminal', 'T2', '--bits', '1Mbit', '--json']);
  t.equal(ok.code, 0, ok.stderr);
  t.same(json<{ loaded: Array<{ terminalId: string }> }>(ok.stdout).loaded.map((l) => l.terminalId), ['T1', 'T2']);
  t.notSame(await ledger(), before, 'and the ledger shows that load (so it would have shown one above)');
});

t.test('malformed values, unknown, repeated and valueless options: exit 2, the reason, the usage line', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['kmd', 'export', '--home', 'h', '--terminal', 'T1', '--bits', '-1'], /^qkt: --bits: not a key amount: "-1" .*; usage: qkt kmd export --home H/],
    [['kmd', 'export', '--home', 'h', '--terminal', 'T1', '--bits', '--purpose', 'enc'], /^qkt: --bits needs a value \(N\); usage: qkt kmd export /],
    [['kmd', 'init', '--home', 'h', '--rate', 'fast'], /^qkt: --rate: not a rate: "fast" .*; usage: qkt kmd init /],
    [['status', '--port', 'x', '--bogus'], /^qkt: unknown option --bogus for qkt status; usage: qkt status --port /],
    [['status', '--port', 'x', '--port', 'y'], /^qkt: --port given twice; give it once; usage: qkt status /],
    [['status', '--port', 'x', '--audit=yes'], /^qkt: --audit takes no value, got "yes"; usage: qkt status /],
    [['status', '--port', 'x', '--baud', '-9600'], /^qkt: --baud must be a whole number from 300 to 12000000, got "-9600"; usage: qkt status /],
    [['status', '--port', 'x', 'extra'], /^qkt: unexpected argument "extra": qkt status takes no arguments besides its options .*; usage: qkt status /],
    [['ports', 'usb'], /^qkt: unexpected argument "usb": qkt ports takes no arguments besides its options; usage: qkt ports/],
    [['--bogus', 'status'], /^qkt: unknown option --bogus before a command; run qkt --help$/m],
    [['kmd', 'frob'], /^qkt: unknown command "kmd frob": qkt kmd has init, enroll, .*; run qkt kmd --help/],
  ];
  for (const [args, re] of cases) {
    const r = await runQkt(args);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, re, args.join(' '));
    t.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line`);
    t.equal(r.stdout, '', `${args.join(' ')}: nothing on stdout`);
  }
  // Under --json the usage error is also the one error document.
  const j = await runQkt(['status', '--port', 'x', 'extra', '--json']);
  t.equal(j.code, 2);
  t.match(json<{ error: { message: string; exitCode: number } }>(j.stdout), { error: { exitCode: 2, message: /unexpected argument "extra"/ } });
  t.notOk(existsSync('h'), 'no home made by any of these');
});

const GROUPS = ['kmd', 'carrier', 'station', 'terminal', 'hil', 'kmd sae'];

t.test('group words list their commands: --help exit 0 on stdout; alone, exit 2 with the list on stderr', async (t) => {
  for (const g of GROUPS) {
    const words = g.split(' ');
    const members = commands.filter((c) => c.path.length > words.length && words.every((w, i) => c.path[i] === w));
    t.ok(members.length > 0, g);
    const help = await runQkt([...words, '--help']);
    t.equal(help.code, 0, `${g} --help`);
    const bare = await runQkt(words);
    t.equal(bare.code, 2, `${g} alone`);
    t.match(bare.stderr, new RegExp(`^qkt: "qkt ${g}" needs a command: `));
    for (const c of members) {
      const line = new RegExp(`\\n  ${c.path.join(' ')} +${c.summary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n`);
      t.match(help.stdout, line, `${g} --help lists ${c.path.join(' ')}`);
      t.match(bare.stderr, line, `${g} alone lists ${c.path.join(' ')}`);
    }
    const doc = json<ListHelp>((await runQkt([...words, '--help', '--json'])).stdout);
    t.equal(doc.group, g);
    t.same(doc.commands.map((c) => c.command), members.map((c) => c.path.join(' ')));
  }
  const top = json<ListHelp>((await runQkt(['--help', '--json'])).stdout);
  t.same(top.commands.map((c) => c.command), commands.map((c) => c.path.join(' ')), 'top level: every command');
  t.same(json<ListHelp>((await runQkt(['help', 'kmd', '--json'])).stdout).commands, json<ListHelp>((await runQkt(['kmd', '--help', '--json'])).stdout).commands, 'qkt help kmd');
});

t.test('every registered command: each option has a description; --help shows it, --help --json gives it', async (t) => {
  for (const c of commands) {
    const name = c.path.join(' ');
    for (const [o, info] of Object.entries(c.options)) t.ok(info.description.length >= 10, `${name} --${o} has a description`);
    for (const r of c.required ?? []) t.ok(c.options[r], `${name}: required --${r} is an option`);
    const doc = json<CommandHelp>((await runQkt([...c.path, '--help', '--json'])).stdout);
    t.equal(doc.command, name);
    t.equal(doc.usage, c.usage);
    t.same(doc.examples, c.examples);
    t.same(doc.options.map((o) => o.name), [...Object.keys(c.options), 'json', 'help'], `${name}: its options, then the global ones`);
    for (const o of doc.options) {
      t.match(o, { type: /^(string|boolean)$/, multiple: Boolean, required: Boolean, description: /\w{3}/ }, `${name} --${o.name}`);
      t.equal(o.required, (c.required ?? []).includes(o.name));
    }
    const text = await runQkt([...c.path, '--help']);
    t.equal(text.code, 0);
    for (const o of doc.options) {
      t.ok(text.stdout.includes(`--${o.name}`) && text.stdout.includes(o.description), `${name} --help shows --${o.name} and its meaning`);
      if (o.default !== null) t.ok(text.stdout.includes(`default: ${String(o.default)}`), `${name} --help shows the default of --${o.name}`);
    }
    // The lazy import points at a real implementation.
    t.type((await c.load()).run, 'function', `${name} loads its implementation`);
  }
  const inject = json<CommandHelp>((await runQkt(['inject', '--help', '--json'])).stdout);
  t.match(inject.options.find((o) => o.name === 'baud'), { default: /115200/, value: 'N', description: /baud/ }, 'a default and a unit');
  t.match(inject.usage, /tcp:HOST:PORT/);
});

t.test('help and usage errors load no command implementation and no dependency', async (t) => {
  // A loader hook records every module the CLI loads (module.register: its own thread, so it
  // writes a file). Wall time is not asserted here (docs/bench/README.md has the figures).
  const dir = t.testdir({});
  const log = join(dir, 'loaded.txt');
  writeFileSync(join(dir, 'hooks.mjs'), `import { appendFileSync } from 'node:fs';\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + '\\n'); return r; }\n`);
  writeFileSync(join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)});\n`);
  const run = (args: string[]) =>
    new Promise<number | null>((done) => {
      writeFileSync(log, '');
      const child = spawn(process.execPath, ['--no-warnings', '--import', pathToFileURL(join(dir, 'register.mjs')).href, QKT_BIN, ...args], { stdio: 'ignore' });
      child.on('close', done);
    });
  for (const args of [['--help'], ['status', '--help'], ['kmd'], ['carrier', 'load', '--carrier', 'x', '--terminal', 'T1', 'T2'], ['inject', '--help', '--json']]) {
    const code = await run(args);
    const loaded = readFileSync(log, 'utf8').split('\n').filter((u) => u.startsWith('file:'));
    t.ok(loaded.some((u) => u.endsWith('/cli/main.js')), `${args.join(' ')}: the hook saw the CLI load (exit ${code})`);
    t.same(loaded.filter((u) => u.includes('/node_modules/') || u.includes('/cli/commands/') || u.includes('/lock.js') || u.includes('/firmware/')), [], `${args.join(' ')}: nothing heavy`);
  }
  // The control: a command that runs does load its implementation, seen by the same hook.
  await run(['status', '--port', '/dev/qkt-no-such-port']);
  t.ok(readFileSync(log, 'utf8').includes('/cli/commands/status.js'), 'a running command loads its module');
  t.ok(readFileSync(log, 'utf8').includes('/transports/serial.js'), 'and a serial path the serial transport');
  // A TCP port needs neither the serial nor the USB library (native bindings, slow to load).
  t.equal(await run(['status', '--port', 'tcp:127.0.0.1:1']), 3);
  const tcp = readFileSync(log, 'utf8');
  t.ok(tcp.includes('/transports/tcp.js'), 'status over tcp: the tcp transport');
  t.notOk(/\/node_modules\/(serialport|@serialport|usb)\/|\/transports\/(serial|webusb)\.js|\/ports\/list\.js/.test(tcp), 'status over tcp: no serial or USB library');
  // usb:VID:PID still reaches the USB library, loaded when asked for.
  const usb = await runQkt(['status', '--port', 'usb:ffff:fffe']);
  t.equal(usb.code, 3);
  t.match(usb.stderr, /^qkt: (no USB device ffff:fffe attached|USB is not available here: .*)\n$/);
});
