// Asymptotic secret-key rates of a QKD link (bits per sent pulse), from which the KMD's key supply
// is set: decoy-state BB84 (GLLP) with infinite decoys or vacuum + weak decoy, and MDI-QKD.
// Pure functions; inputs are checked once at the public entries (RangeError naming the parameter).
// Reference values and sources: fixtures/qkd/ (fixtures.json, README.md).
//
// Sources:
// - [GLLP] Gottesman, Lo, Lütkenhaus, Preskill, QIC 4, 325 (2004): the key rate formula.
// - [LMC] Lo, Ma, Chen, PRL 94, 230504 (2005): decoy states; infinite-decoy limit.
// - [MQZL] Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005): the channel model, the GLLP rate with decoys,
//   the vacuum + weak decoy bounds on Y1 and e1; the GYS parameter set (Gobby, Yuan, Shields 2004).
// - [LCQ] Lo, Curty, Qi, PRL 108, 130503 (2012): MDI-QKD and its key rate.
// - [MR] Ma, Razavi, PRA 86, 062319 (2012): closed forms of the MDI gains and error rates for
//   phase-randomised weak coherent pulses, and of Y11 and e11.
// Equation forms as fixtures/qkd/README.md writes them; every term is checked against the
// fixtures' intermediate quantities (qkd-model.test.ts).

/** Parameters of a decoy-state BB84 link, as in [MQZL]. */
export interface DecoyBb84Params {
  /** Fibre loss, dB/km. */
  alpha: number;
  /** Bob's side: detector efficiency times internal transmittance. */
  etaBob: number;
  /** Probability that a photon hits the wrong detector (optical misalignment). */
  eDet: number;
  /** Background (dark count) yield per pulse. */
  y0: number;
  /** Error correction inefficiency (>= 1; 1 is the Shannon limit). */
  f: number;
  /** Sifting factor: 1/2 for BB84 with random bases. */
  q: number;
  /** Error rate of background counts (random: 1/2). */
  e0: number;
}

/** The GYS set used by [MQZL] (the fixtures' `decoy_bb84_GYS.params`). */
export const GYS: Readonly<DecoyBb84Params> = Object.freeze({ alpha: 0.21, etaBob: 0.045, eDet: 0.033, y0: 1.7e-6, f: 1.22, q: 0.5, e0: 0.5 });

/** Parameters of a symmetric MDI-QKD link (Charlie halfway), as in [LCQ] and [MR]. */
export interface MdiParams {
  /** Fibre loss, dB/km. */
  alpha: number;
  /** Detector efficiency at Charlie. */
  etaD: number;
  /** Dark count probability per detector per pulse. */
  pd: number;
  /** Misalignment error probability. */
  ed: number;
  /** Error correction inefficiency. */
  f: number;
  /** Error rate of background counts (1/2). */
  e0: number;
}

/** The set of the fixtures' `mdi_qkd_LCQ.params`. */
export const MDI_LCQ: Readonly<MdiParams> = Object.freeze({ alpha: 0.2, etaD: 0.145, pd: 3e-6, ed: 0.015, f: 1.16, e0: 0.5 });

/** The vacuum + weak decoy intensity the fixtures use. */
export const DEFAULT_NU = 0.05;

/** A QKD link model; `mu` (signal mean photon number) omitted: the one giving the highest rate. */
export type QkdModel =
  | { kind: 'bb84-decoy'; mu?: number; params?: DecoyBb84Params }
  | { kind: 'bb84-vacuum-weak'; mu?: number; nu?: number; params?: DecoyBb84Params }
  | { kind: 'mdi'; mu?: number; params?: MdiParams };

export type QkdModelKind = QkdModel['kind'];
export const QKD_MODEL_KINDS: readonly QkdModelKind[] = ['bb84-decoy', 'bb84-vacuum-weak', 'mdi'];

// ---- validation (once, at the public entries) ----

function check(name: string, x: number, ok: (x: number) => boolean, what: string): void {
  if (typeof x !== 'number' || !Number.isFinite(x) || !ok(x)) throw new RangeError(`${name} must be ${what}, got ${String(x)}`);
}
const checkKm = (km: number): void => check('km', km, (x) => x >= 0, 'a distance in km >= 0');
const checkProb = (name: string, x: number): void => check(name, x, (v) => v >= 0 && v <= 1, 'a probability in [0, 1]');
const checkEff = (name: string, x: number): void => check(name, x, (v) => v > 0 && v <= 1, 'an efficiency in (0, 1]');
const checkMu = (name: string, x: number): void => check(name, x, (v) => v > 0 && v <= MU_MAX, `a mean photon number in (0, ${MU_MAX}]`);

function checkBb84(p: DecoyBb84Params): void {
  check('alpha', p.alpha, (x) => x >= 0, 'a loss in dB/km >= 0');
  checkEff('etaBob', p.etaBob);
  check('eDet', p.eDet, (x) => x >= 0 && x <= 0.5, 'an error probability in [0, 0.5]');
  check('y0', p.y0, (x) => x >= 0 && x < 1, 'a yield in [0, 1)');
  check('f', p.f, (x) => x >= 1, 'an error correction inefficiency >= 1');
  checkEff('q', p.q);
  check('e0', p.e0, (x) => x >= 0 && x <= 0.5, 'an error probability in [0, 0.5]');
}

function checkMdi(p: MdiParams): void {
  check('alpha', p.alpha, (x) => x >= 0, 'a loss in dB/km >= 0');
  checkEff('etaD', p.etaD);
  check('pd', p.pd, (x) => x >= 0 && x < 1, 'a dark count probability in [0, 1)');
  check('ed', p.ed, (x) => x >= 0 && x <= 0.5, 'an error probability in [0, 0.5]');
  check('f', p.f, (x) => x >= 1, 'an error correction inefficiency >= 1');
  check('e0', p.e0, (x) => x >= 0 && x <= 0.5, 'an error probability in [0, 0.5]');
}

function checkModel(m: QkdModel): void {
  if (typeof m !== 'object' || m === null || !QKD_MODEL_KINDS.includes(m.kind)) throw new RangeError(`model.kind must be one of ${QKD_MODEL_KINDS.join(', ')}, got ${String((m as { kind?: unknown } | null)?.kind)}`);
  if (m.mu !== undefined) checkMu('mu', m.mu);
  if (m.kind === 'mdi') checkMdi(m.params ?? MDI_LCQ);
  else checkBb84(m.params ?? GYS);
  if (m.kind === 'bb84-vacuum-weak') {
    const nu = m.nu ?? DEFAULT_NU;
    checkMu('nu', nu);
    if (m.mu !== undefined && !(nu < m.mu)) throw new RangeError(`nu must be below mu (the weak decoy is weaker than the signal), got nu ${nu}, mu ${m.mu}`);
  }
}

// ---- formulas ----

/** Binary entropy H2(x) = -x log2 x - (1-x) log2(1-x), in bits; H2(0) = H2(1) = 0. */
export function h2(x: number): number {
  checkProb('x', x);
  return _h2(x);
}
function _h2(x: number): number {
  return x <= 0 || x >= 1 ? 0 : -x * Math.log2(x) - (1 - x) * Math.log2(1 - x);
}

/** Decoy BB84 channel quantities at one intensity, [MQZL]'s channel model. */
export interface Bb84Channel {
  /** Overall transmittance: 10^(-alpha L / 10) eta_Bob. */
  eta: number;
  /** Gain of the signal (detections per pulse), Q_mu. */
  qMu: number;
  /** Quantum bit error rate of the signal, E_mu. */
  eMu: number;
  /** Single-photon yield Y1 and its error rate e1 (the true values: the infinite-decoy limit). */
  y1: number;
  e1: number;
}

/** [MQZL]'s channel model: eta, Q_mu, E_mu, Y1, e1 at `km` for intensity `mu`. */
export function bb84Channel(km: number, mu: number, p: DecoyBb84Params = GYS): Bb84Channel {
  checkKm(km);
  checkMu('mu', mu);
  checkBb84(p);
  return _bb84Channel(km, mu, p);
}
function _bb84Channel(km: number, mu: number, p: DecoyBb84Params): Bb84Channel {
  const eta = 10 ** ((-p.alpha * km) / 10) * p.etaBob;
  const detect = 1 - Math.exp(-eta * mu);
  const qMu = p.y0 + detect; // Q_mu = Y0 + 1 - e^(-eta mu)
  const eMu = (p.e0 * p.y0 + p.eDet * detect) / qMu; // E_mu Q_mu = e0 Y0 + e_det (1 - e^(-eta mu))
  const y1 = p.y0 + eta - eta * p.y0; // Y_i = Y0 + eta_i - Y0 eta_i, i = 1
  const e1 = (p.e0 * p.y0 + p.eDet * eta) / y1; // e_i Y_i = e0 Y0 + e_det eta_i, i = 1
  return { eta, qMu, eMu, y1, e1 };
}

/** Vacuum + weak decoy lower bound on Y1 and upper bound on e1, [MQZL] (vacuum + weak decoy section). */
export function vacuumWeakBounds(km: number, mu: number, nu: number, p: DecoyBb84Params = GYS): { y1L: number; e1U: number } {
  checkKm(km);
  checkModel({ kind: 'bb84-vacuum-weak', mu, nu, params: p });
  return _vacuumWeakBounds(km, mu, nu, p);
}
function _vacuumWeakBounds(km: number, mu: number, nu: number, p: DecoyBb84Params): { y1L: number; e1U: number } {
  const s = _bb84Channel(km, mu, p);
  const w = _bb84Channel(km, nu, p);
  // Y1 >= mu / (mu nu - nu^2) [Q_nu e^nu - Q_mu e^mu nu^2/mu^2 - (mu^2 - nu^2)/mu^2 Y0]
  const y1L = (mu / (mu * nu - nu * nu)) * (w.qMu * Math.exp(nu) - (s.qMu * Math.exp(mu) * nu * nu) / (mu * mu) - ((mu * mu - nu * nu) / (mu * mu)) * p.y0);
  // e1 <= (E_nu Q_nu e^nu - e0 Y0) / (Y1_L nu)
  const e1U = (w.eMu * w.qMu * Math.exp(nu) - p.e0 * p.y0) / (y1L * nu);
  return { y1L, e1U };
}

/**
 * GLLP rate as [MQZL] writes it: R = q { -Q_mu f H2(E_mu) + Q1 [1 - H2(e1)] }, Q1 = Y1 mu e^-mu, with the
 * true Y1, e1 (infinite decoys, [LMC]) or the vacuum + weak bounds (`nu` given). Not clamped: the
 * sign is what the cutoff search needs.
 */
function _bb84Raw(km: number, mu: number, p: DecoyBb84Params, nu?: number): number {
  const c = _bb84Channel(km, mu, p);
  let y1 = c.y1;
  let e1 = c.e1;
  if (nu !== undefined) ({ y1L: y1, e1U: e1 } = _vacuumWeakBounds(km, mu, nu, p));
  if (!(y1 > 0)) return -c.qMu * p.f * _h2(c.eMu); // the bound proves no single-photon yield
  const q1 = y1 * mu * Math.exp(-mu);
  return p.q * (-c.qMu * p.f * _h2(c.eMu) + q1 * (1 - _h2(Math.min(0.5, e1))));
}

/** MDI-QKD channel quantities at intensity mu for both senders, [MR] (symmetric channel). */
export interface MdiChannel {
  /** Transmittance of one arm (sender to Charlie): eta_d 10^(-alpha (L/2) / 10). */
  etaArm: number;
  /** Gain and error rate in the Z (rectilinear) basis, which makes the key. */
  qZ: number;
  eZ: number;
  /** Gain and error rate in the X (diagonal) basis, which estimates the phase error. */
  qX: number;
  eX: number;
  /** Yield of single-photon pairs and its X-basis error rate. */
  y11: number;
  e11: number;
}

/** [MR] closed forms for the symmetric channel (eta_a = eta_b, mu_a = mu_b = mu). */
export function mdiChannel(km: number, mu: number, p: MdiParams = MDI_LCQ): MdiChannel {
  checkKm(km);
  checkMu('mu', mu);
  checkMdi(p);
  return _mdiChannel(km, mu, p);
}
function _mdiChannel(km: number, mu: number, p: MdiParams): MdiChannel {
  const ea = p.etaD * 10 ** ((-p.alpha * (km / 2)) / 10);
  const eb = ea;
  const pd = p.pd;
  const ma = mu;
  const mb = mu;
  const muP = ea * ma + eb * mb; // mu' in [MR]
  const x = Math.sqrt(ea * ma * eb * mb) / 2;
  const y = (1 - pd) * Math.exp(-muP / 4);
  // Z basis: Q_C (correct: detections from the wanted two-photon interference) and Q_E (erroneous).
  const qC = 2 * (1 - pd) ** 2 * Math.exp(-muP / 2) * (1 - (1 - pd) * Math.exp(-(ea * ma) / 2)) * (1 - (1 - pd) * Math.exp(-(eb * mb) / 2));
  const qE = 2 * pd * (1 - pd) ** 2 * Math.exp(-muP / 2) * (besselI0(2 * x) - (1 - pd) * Math.exp(-muP / 2));
  const qZ = qC + qE;
  const eZ = (p.ed * qC + (1 - p.ed) * qE) / qZ;
  // X basis: Q_X = 2 y^2 [1 + 2 y^2 - 4 y I0(x) + I0(2x)]; E_X Q_X = e0 Q_X - 2 (e0 - e_d) y^2 [I0(2x) - 1].
  const qX = 2 * y * y * (1 + 2 * y * y - 4 * y * besselI0(x) + besselI0(2 * x));
  const eX = (p.e0 * qX - 2 * (p.e0 - p.ed) * y * y * (besselI0(2 * x) - 1)) / qX;
  // Single-photon pairs: Y11 = (1-pd)^2 [ea eb / 2 + (2 ea + 2 eb - 3 ea eb) pd + 4 (1-ea)(1-eb) pd^2],
  // e11 Y11 = e0 Y11 - (e0 - e_d)(1-pd)^2 ea eb / 2.
  const y11 = (1 - pd) ** 2 * ((ea * eb) / 2 + (2 * ea + 2 * eb - 3 * ea * eb) * pd + 4 * (1 - ea) * (1 - eb) * pd * pd);
  const e11 = (p.e0 * y11 - ((p.e0 - p.ed) * (1 - pd) ** 2 * ea * eb) / 2) / y11;
  return { etaArm: ea, qZ, eZ, qX, eX, y11, e11 };
}

/** [LCQ]'s key rate (as [MR] writes it, no sifting factor): R = Q11 [1 - H2(e11)] - f Q_Z H2(E_Z), Q11 = mu^2 e^-2mu Y11. Not clamped. */
function _mdiRaw(km: number, mu: number, p: MdiParams): number {
  const c = _mdiChannel(km, mu, p);
  const q11 = mu * mu * Math.exp(-2 * mu) * c.y11;
  return q11 * (1 - _h2(c.e11)) - p.f * c.qZ * _h2(c.eZ);
}

/** Modified Bessel function of the first kind, order 0, by its power series (arguments here are < 1). */
function besselI0(x: number): number {
  const q = (x / 2) * (x / 2);
  let term = 1;
  let sum = 1;
  for (let k = 1; k < 500 && term > 1e-18 * sum; k++) {
    term *= q / (k * k);
    sum += term;
  }
  return sum;
}

// ---- the rate of a model, mu optimised, cutoff ----

/** Largest signal intensity considered (rates fall off well before it for these links). */
export const MU_MAX = 2;

function rawRate(m: QkdModel, km: number, mu: number): number {
  if (m.kind === 'mdi') return _mdiRaw(km, mu, m.params ?? MDI_LCQ);
  return _bb84Raw(km, mu, m.params ?? GYS, m.kind === 'bb84-vacuum-weak' ? (m.nu ?? DEFAULT_NU) : undefined);
}

/**
 * Maximise f on (lo, hi): a grid of 200 points to find the peak's neighbourhood (so a rate that
 * is not unimodal over the whole range cannot mislead it), then golden-section search on the two
 * grid cells around the best point, down to 1e-12 in mu. The rate is smooth in mu near its peak.
 */
function maximise(f: (x: number) => number, lo: number, hi: number): { x: number; value: number } {
  const n = 200;
  const step = (hi - lo) / n;
  let best = 1;
  let bestV = -Infinity;
  for (let i = 1; i < n; i++) {
    const v = f(lo + i * step);
    if (v > bestV) [best, bestV] = [i, v];
  }
  let a = lo + (best - 1) * step;
  let b = lo + (best + 1) * step;
  const g = (Math.sqrt(5) - 1) / 2;
  let c = b - g * (b - a);
  let d = a + g * (b - a);
  let fc = f(c);
  let fd = f(d);
  while (b - a > 1e-12) {
    if (fc >= fd) {
      // The peak is in [a, d]: d moves to c, a new c.
      b = d;
      d = c;
      fd = fc;
      c = b - g * (b - a);
      fc = f(c);
    } else {
      a = c;
      c = d;
      fc = fd;
      d = a + g * (b - a);
      fd = f(d);
    }
  }
  const x = (a + b) / 2;
  const value = f(x);
  return value >= bestV ? { x, value } : { x: lo + best * step, value: bestV };
}

/** Per-pulse key rate of `model` at `km` (>= 0; 0 where no key can be made), and the mu used. */
export function perPulseRate(model: QkdModel, km: number): { rate: number; mu: number } {
  checkModel(model);
  checkKm(km);
  const { value, mu } = _rawAt(model, km);
  return { rate: Math.max(0, value), mu };
}

function _rawAt(model: QkdModel, km: number): { value: number; mu: number } {
  if (model.mu !== undefined) return { value: rawRate(model, km, model.mu), mu: model.mu };
  const lo = model.kind === 'bb84-vacuum-weak' ? (model.nu ?? DEFAULT_NU) : 0;
  const { x, value } = maximise((mu) => rawRate(model, km, mu), lo, MU_MAX);
  return { value, mu: x };
}

/**
 * Distance (km) at which the model's per-pulse rate falls to `perPulse` (0: the cutoff, where no key
 * is left): bisection, the rate falling with distance, to 1e-9 km. 0 if the rate is already below
 * `perPulse` at 0 km.
 */
export function distanceForPerPulseRateKm(model: QkdModel, perPulse = 0): number {
  checkModel(model);
  check('perPulse', perPulse, (x) => x >= 0 && x < 1, 'a rate per pulse in [0, 1)');
  const above = (km: number): boolean => _rawAt(model, km).value > perPulse;
  if (!above(0)) return 0;
  let lo = 0;
  let hi = 100;
  while (above(hi)) {
    lo = hi;
    hi *= 2;
    if (hi > 1e5) throw new RangeError('model gives key beyond 100000 km: check its parameters');
  }
  while (hi - lo > 1e-9) {
    const mid = (lo + hi) / 2;
    if (above(mid)) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** Cutoff distance (km): where the model's rate reaches 0. */
export function cutoffKm(model: QkdModel): number {
  return distanceForPerPulseRateKm(model, 0);
}

/** Key supply in bit/s of a link running the model at `km` with `pulseRateHz` pulses a second: R x pulse rate. */
export function supplyBitsPerSecond(model: QkdModel, km: number, pulseRateHz: number): number {
  check('pulseRateHz', pulseRateHz, (x) => x > 0, 'a pulse rate in Hz > 0');
  return perPulseRate(model, km).rate * pulseRateHz;
}
