// Mosquitto (Debian's) for the broker tests: one broker per test on a free loopback port, its own
// config in the test's folder, stopped by pid. Missing: the test skips with the reason, except
// under CI=true, where .ci/run installs it and its absence is a failure.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';

const BIN = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((p) => spawnSync(p, ['-h']).error === undefined);

/** Why a broker test cannot run here (false: it can). */
export function mosquittoSkipReason(): string | false {
  if (BIN) return false;
  if (process.env['CI'] === 'true') throw new Error('mosquitto is not installed: .ci/run installs it (apt-get install mosquitto)');
  return 'mosquitto is not installed (apt-get install mosquitto)';
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });

export interface Mosquitto {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Start mosquitto on 127.0.0.1 (anonymous, no persistence, TCP_NODELAY as docs/station.md advises); ready when it accepts. */
export async function startMosquitto(dir: string): Promise<Mosquitto> {
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\n`);
  const child = spawn(BIN!, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    const ok = await new Promise<boolean>((r) => {
      const c = connect(port, '127.0.0.1', () => {
        c.destroy();
        r(true);
      });
      c.once('error', () => r(false));
    });
    if (ok) return { url: `mqtt://127.0.0.1:${port}`, child, stop };
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`mosquitto did not start: ${err.trim()}`);
}
