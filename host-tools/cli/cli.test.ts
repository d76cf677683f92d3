// The qkt CLI run as a user runs it: help, version, usage errors, exit codes, --json documents.
import t from 'tap';
import { runQkt } from '../../hil/cli.js';

t.test('--help lists the commands; --version prints the package version', async (t) => {
  const h = await runQkt(['--help']);
  t.equal(h.code, 0);
  for (const c of ['demo', 'status', 'terminal run', 'bench']) t.match(h.stdout, c);
  const v = await runQkt(['--version']);
  t.equal(v.code, 0);
  t.match(v.stdout, /^qkt \d+\.\d+\.\d+\n$/);
  const vj = await runQkt(['--version', '--json']);
  t.match(JSON.parse(vj.stdout), { version: String });
  const sub = await runQkt(['status', '--help']);
  t.equal(sub.code, 0);
  t.match(sub.stdout, /Usage: qkt status --port/);
});

t.test('usage errors: exit 2, one line on stderr', async (t) => {
  const u = await runQkt(['frobnicate']);
  t.equal(u.code, 2);
  t.match(u.stderr, /^qkt: unknown command "frobnicate"/);
  t.equal(u.stderr.trim().split('\n').length, 1);
  const m = await runQkt(['status']);
  t.equal(m.code, 2);
  t.match(m.stderr, /--port is required/);
  const o = await runQkt(['status', '--port', 'x', '--bogus']);
  t.equal(o.code, 2);
  t.match(o.stderr, /bogus/);
  const b = await runQkt(['status', '--port', 'x', '--baud', 'fast']);
  t.equal(b.code, 2);
  t.match(b.stderr, /--baud must be a whole number/);
});

t.test('no device: exit 3 with the port named; --json gets one error document', async (t) => {
  const r = await runQkt(['status', '--port', '/dev/qkt-no-such-port', '--json']);
  t.equal(r.code, 3);
  t.match(r.stderr, /^qkt: cannot open \/dev\/qkt-no-such-port/);
  const doc = JSON.parse(r.stdout) as { error: { message: string; exitCode: number } };
  t.equal(doc.error.exitCode, 3);
  const tcp = await runQkt(['status', '--port', 'tcp:127.0.0.1:1']);
  t.equal(tcp.code, 3);
  t.match(tcp.stderr, /cannot connect to tcp:127.0.0.1:1/);
});

t.test('demo --json: one JSON document; every message opened, both sides used the same keys', async (t) => {
  const r = await runQkt(['demo', '--json']);
  t.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as { ok: boolean; receiptsCollected: number; terminals: Array<{ terminalId: string; injectedBits: number; storedKeyBits: number; terminalConsumedBits: number; stationConsumedBits: number }> };
  t.equal(doc.ok, true);
  t.equal(doc.receiptsCollected, 3);
  t.same(doc.terminals.map((x) => x.terminalId), ['T1', 'T2', 'T3']);
  for (const x of doc.terminals) {
    t.equal(x.injectedBits, 3 * 2 ** 20);
    t.equal(x.storedKeyBits, 3 * 2 ** 20);
    t.ok(x.terminalConsumedBits > 0);
    t.equal(x.terminalConsumedBits, x.stationConsumedBits);
  }
  t.equal(r.stderr, '', 'nothing on stderr under --json');
  // Step 6: each terminal's service traffic as a user class, every message opened, its key counted on both sides.
  const traffic = (doc as unknown as { traffic: { rows: Array<{ terminalId: string; class: string; messages: number; failed: number; keyBits: number; plainBits: number; delivered: number; late: number; forecast: { secondsLeft: number | null; onlineBitsPerSecond: number } }> } }).traffic;
  t.same(traffic.rows.map((x) => [x.terminalId, x.class]), [['T1', 'A'], ['T2', 'C'], ['T3', 'E']]);
  for (const x of traffic.rows) {
    t.ok(x.messages > 0 && x.failed === 0 && x.delivered + x.late === x.messages, `${x.terminalId}: ${x.messages} messages, all opened`);
    t.equal(x.keyBits, x.plainBits + 256 * x.messages, 'OTP: pad and a MAC key per message');
    t.ok(x.forecast.secondsLeft !== null && x.forecast.secondsLeft > 0 && x.forecast.onlineBitsPerSecond === 0, 'a forecast, offline only');
  }
  const human = await runQkt(['demo']);
  t.equal(human.code, 0);
  t.match(human.stdout, /\| T3 \| 3 Mbit \|/);
  t.match(human.stdout, /3 receipts collected/);
  t.match(human.stdout, /\| terminal \| class \| messages \| access delay median s \| cipher rate kbit\/s \| key use rate \| packet loss % \| pool lasts \(offline only\) \|/);
  t.match(human.stdout, /^\| T1 \| A \| \d+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+ min \|$/m);
});

t.test('hil run refuses what it cannot run, before starting anything', async (t) => {
  const r = await runQkt(['hil', 'run', '--transport', 'carrier-pigeon']);
  t.equal(r.code, 2);
  t.match(r.stderr, /^qkt: unknown transport carrier-pigeon; choose from inproc, tcp, pty, mock, webusb; usage: qkt hil run \[--transport [^\n]*\n$/);
  const c = await runQkt(['hil', 'run', '--carrier', '/nonexistent/drive']);
  t.equal(c.code, 2);
  t.match(c.stderr, /--carrier \/nonexistent\/drive does not exist/);
});
