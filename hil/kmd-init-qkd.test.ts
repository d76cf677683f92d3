// `qkt kmd init --qkd MODEL --km N --pulse-rate HZ` (issue 12 item 3): the KMD's supply runs at the
// QKD link model's rate (qkd-model.ts), supply.json records the model, `kmd status` shows it; a
// fixed rate is unchanged; --rate with a QKD model, --km without one, and a link past its cutoff
// are usage errors (exit 2), creating nothing. Real `qkt` processes, from the current build.
import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQkt } from './cli.js';
import { cliSkipReason } from './e2e-rig.js';
import { perPulseRate } from '../host-tools/kmd/qkd-model.js';

const skip = cliSkipReason();

t.test('bb84-decoy at 50 km, 1 GHz: about 2.226e-4 x 1e9 bit/s, model in supply.json and kmd status', { skip }, async (t) => {
  const home = join(t.testdir({}), 'kmd');
  const init = await runQkt(['kmd', 'init', '--home', home, '--qkd', 'bb84-decoy', '--km', '50', '--pulse-rate', '1GHz', '--json']);
  t.equal(init.code, 0, init.stderr);
  const { rate: perPulse, mu } = perPulseRate({ kind: 'bb84-decoy' }, 50);
  t.match(JSON.parse(init.stdout), { rateBitsPerSecond: Math.floor(perPulse * 1e9), link: { model: 'bb84-decoy', km: 50, pulseRateHz: 1e9, perPulse, mu } });

  const file = JSON.parse(readFileSync(join(home, 'supply.json'), 'utf8'));
  t.match(file, { model: 'bb84-decoy', km: 50, pulseRateHz: 1e9, perPulse, rateBitsPerSecond: Math.floor(perPulse * 1e9) });

  const st = await runQkt(['kmd', 'status', '--home', home, '--json']);
  t.equal(st.code, 0, st.stderr);
  const supply = JSON.parse(st.stdout).supply;
  t.match(supply, { model: 'bb84-decoy', km: 50, pulseRateHz: 1e9 });
  t.ok(Math.abs(supply.perPulse / 2.226e-4 - 1) < 1e-3, `perPulse ${supply.perPulse} is about 2.226e-4`);
  t.ok(Math.abs(supply.rateBitsPerSecond / 2.226e5 - 1) < 1e-3, `rate ${supply.rateBitsPerSecond} bit/s is about 2.226e-4 x 1e9`);
  t.equal(supply.rateBitsPerSecond, 222595, 'rounded down to a whole bit/s');

  const text = await runQkt(['kmd', 'status', '--home', home]);
  t.match(text.stdout, /^supply: .* available at 222595 bit\/s \(bb84-decoy link, 50 km, 1 GHz pulses, 2\.226e-4 bit per pulse at mu 0\.479\); .* handed out so far$/m);
});

t.test('the other models, and the default pulse rate (1 GHz)', { skip }, async (t) => {
  const dir = t.testdir({});
  for (const [model, km, pulse] of [['bb84-vacuum-weak', 100, '50MHz'], ['mdi', 100, undefined]] as const) {
    const home = join(dir, model);
    const r = await runQkt(['kmd', 'init', '--home', home, '--qkd', model, '--km', String(km), ...(pulse ? ['--pulse-rate', pulse] : []), '--json']);
    t.equal(r.code, 0, r.stderr);
    const hz = pulse ? 50e6 : 1e9;
    const { rate } = perPulseRate({ kind: model }, km);
    const supply = JSON.parse((await runQkt(['kmd', 'status', '--home', home, '--json'])).stdout).supply;
    t.match(supply, { model, km, pulseRateHz: hz, perPulse: rate, rateBitsPerSecond: Math.floor(rate * hz) });
  }
});

t.test('a fixed supply: as before, the model recorded as fixed; an old supply.json without it reads as fixed', { skip }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  t.equal((await runQkt(['kmd', 'init', '--home', home, '--rate', '1Mbit/s'])).code, 0);
  const st = JSON.parse((await runQkt(['kmd', 'status', '--home', home, '--json'])).stdout).supply;
  t.same(Object.keys(st).sort(), ['availableBits', 'capacityBits', 'model', 'rateBitsPerSecond', 'takenBits']);
  t.match(st, { model: 'fixed', rateBitsPerSecond: 1_000_000 });

  const old = join(dir, 'old');
  t.equal((await runQkt(['kmd', 'init', '--home', old, '--qkd', 'fixed'])).code, 0);
  const file = JSON.parse(readFileSync(join(old, 'supply.json'), 'utf8'));
  delete file.model;
  writeFileSync(join(old, 'supply.json'), JSON.stringify(file));
  const o = await runQkt(['kmd', 'status', '--home', old, '--json']);
  t.equal(o.code, 0, o.stderr);
  t.match(JSON.parse(o.stdout).supply, { model: 'fixed', rateBitsPerSecond: 11_000 });
  const text = await runQkt(['kmd', 'status', '--home', old]);
  t.match(text.stdout, /^supply: .* available at 11000 bit\/s; .* handed out so far$/m);

  // A QKD model's figures missing: a damaged account, exit 6, naming the file.
  writeFileSync(join(old, 'supply.json'), JSON.stringify({ ...file, model: 'mdi' }));
  const d = await runQkt(['kmd', 'status', '--home', old]);
  t.equal(d.code, 6);
  t.match(d.stderr, 'supply.json');
});

t.test('refusals: exit 2, one line naming the option, no home made', { skip }, async (t) => {
  const dir = t.testdir({});
  const cases: Array<[string[], RegExp]> = [
    [['--qkd', 'bb84-decoy', '--km', '50', '--rate', '11kbit/s'], /^qkt: --rate is for --qkd fixed: with --qkd bb84-decoy the rate follows from --km and --pulse-rate; usage: qkt kmd init --home H \[--qkd /],
    [['--km', '50'], /^qkt: --km sets up a QKD link model: give --qkd bb84-decoy\|bb84-vacuum-weak\|mdi with it/],
    [['--qkd', 'fixed', '--km', '50'], /^qkt: --km sets up a QKD link model/],
    [['--pulse-rate', '1GHz'], /^qkt: --pulse-rate sets up a QKD link model/],
    [['--qkd', 'mdi'], /^qkt: --qkd mdi needs --km N, the length of the link in km; usage: qkt kmd init --home H \[--qkd /],
    [['--qkd', 'bb84'], /^qkt: --qkd must be one of fixed, bb84-decoy, bb84-vacuum-weak, mdi, got "bb84"; usage: qkt kmd init --home H \[--qkd /],
    [['--qkd', 'mdi', '--km', '-5'], /^qkt: --km must be a distance in km/],
    [['--qkd', 'mdi', '--km', 'far'], /^qkt: --km must be a distance in km/],
    [['--qkd', 'mdi', '--km', '0x10'], /^qkt: --km must be a distance in km \(a decimal number from 0 to 10000\), got "0x10"/],
    [['--qkd', 'mdi', '--km', '1e400'], /^qkt: --km must be a distance in km/],
    [['--qkd', 'mdi', '--km', '0', '--pulse-rate', '9'.repeat(400) + 'GHz'], /^qkt: --pulse-rate: frequency must be positive and at most 1 THz/],
    [['--qkd', 'mdi', '--km', '50', '--pulse-rate', 'fast'], /^qkt: --pulse-rate: not a frequency: "fast"/],
    [['--qkd', 'mdi', '--km', '250'], /^qkt: --km 250: --qkd mdi makes no key at 250 km \(its cutoff is 232\.09 km\); usage: qkt kmd init --home H \[--qkd /],
    [['--qkd', 'bb84-decoy', '--km', '140', '--pulse-rate', '1kHz'], /^qkt: --km 140: --qkd bb84-decoy makes under 1 bit\/s at 1 kHz pulses at 140 km \(its cutoff is 142\.21 km\); usage: qkt kmd init --home H \[--qkd /],
  ];
  for (const [args, message] of cases) {
    const home = join(dir, 'kmd');
    const r = await runQkt(['kmd', 'init', '--home', home, ...args]);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, message, args.join(' '));
    t.equal(r.stdout, '');
    t.notOk(existsSync(join(home, 'kmd.json')), 'no KMD created');
  }
});
