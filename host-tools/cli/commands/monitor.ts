// `qkt monitor A B [--pcap FILE] [--baud N]`: a transparent relay between the device side A and
// the host side B (transports/cable.ts, unpaced, no noise) that shows every frame both ways as it
// passes: a line per frame (or a JSON object per line with --json), and a pcap for Wireshark
// (docs/wireshark/qkt.lua). The relay forwards every byte unchanged; decoding (monitor/) works on
// a copy and never holds it up. Ends: pty, tcp:HOST:PORT (listen), connect:HOST:PORT, a serial path.
import { defineCommand, int, str, CliError, Exit } from '../command.js';
import { connectTcpEnd, joinCable, ptyEnd, serialEnd, tcpServerEnd } from '../../transports/cable.js';
import type { CableEnd } from '../../transports/cable.js';
import { parseHostPort } from '../../transports/tcp.js';
import { NoDeviceError, errnoOf } from '../../link/errors.js';
import { LinkMonitor, formatFrame } from '../../monitor/link-monitor.js';
import type { Direction, MonitorStats } from '../../monitor/link-monitor.js';
import { PcapWriter } from '../../monitor/pcap.js';
import type { PcapFrame } from '../../monitor/pcap.js';
import { FrameOutput } from '../../monitor/output.js';

export interface MonitorReady {
  event: 'ready';
  /** The device side: what to open or where it is (a pty path, tcp:HOST:PORT, the serial path). */
  a: string;
  /** The host side. */
  b: string;
  pcap: string | null;
  pid: number;
}

export interface MonitorEnd {
  event: 'end';
  /** Why the relay ended: "stopped" (Ctrl-C / SIGTERM) or the end that closed. */
  reason: string;
  'host->device': MonitorStats;
  'device->host': MonitorStats;
  pcapRecords: number | null;
  /** Frame lines left out because stdout was not read fast enough (monitor/output.ts). */
  framesNotShown: number;
}

type Spec = { kind: 'pty' } | { kind: 'listen'; host: string; port: number } | { kind: 'connect'; host: string; port: number } | { kind: 'serial'; path: string };

function parseEnd(text: string): Spec {
  if (text === 'pty') return { kind: 'pty' };
  for (const [scheme, kind] of [['tcp', 'listen'], ['connect', 'connect']] as const) {
    if (!text.startsWith(`${scheme}:`)) continue;
    try {
      return { kind, ...parseHostPort(text, scheme) };
    } catch (e) {
      throw new CliError(`${text}: ${(e as Error).message}`, Exit.USAGE);
    }
  }
  if (text.startsWith('/')) return { kind: 'serial', path: text };
  throw new CliError(`monitor end ${JSON.stringify(text)} is not pty, tcp:HOST:PORT, connect:HOST:PORT or a serial device path (/dev/...)`, Exit.USAGE);
}

const hostPort = (h: string, p: number) => `${h.includes(':') ? `[${h}]` : h}:${p}`;

const summary = (dir: Direction, s: MonitorStats) => {
  const problems = Object.entries(s.problems).map(([k, n]) => `${n} ${k}`);
  const shards = (s.shards ? `; FEC shards: ${s.shards.good} whole, ${s.shards.bad} bad` : '') + (s.needs ? `; NEEDs: ${s.needs.good} whole, ${s.needs.bad} bad` : '');
  return `${dir}: ${s.frames} frames, ${s.bytes} bytes${problems.length ? `, ${problems.join(', ')}` : ', no framing errors'}${shards}`;
};

export default defineCommand<MonitorReady>({
  async run(v, positionals, io) {
    if (positionals.length !== 2) throw new CliError('give two ends: qkt monitor A B (A the device side, B the host side; each pty, tcp:HOST:PORT, connect:HOST:PORT or a serial path)', Exit.USAGE);
    const specs = positionals.map(parseEnd);
    const baud = int(v, 'baud', 300, 12_000_000);
    const pcapPath = str(v, 'pcap');

    const opened: { label: string; end: CableEnd }[] = [];
    let pcap: PcapWriter | undefined;
    let capturing = true;
    const closeAll = async () => {
      for (const o of opened) {
        await o.end.transport.close().catch(() => undefined);
        await o.end.dispose?.().catch(() => undefined);
      }
      pcap?.close();
    };
    try {
      for (const [i, s] of specs.entries()) {
        const name = positionals[i]!;
        if (s.kind === 'pty') {
          const end = await ptyEnd();
          opened.push({ label: end.path, end });
        } else if (s.kind === 'listen') {
          // Serves one connection at a time, for as long as the monitor runs: a host program may
          // come and go (status, then inject) on the same monitor.
          let label = `tcp:${hostPort(s.host, s.port)}`;
          const end = await tcpServerEnd(s.host, s.port, {
            connected: (d) => io.log(`${label}: connected (${d})`),
            disconnected: (d) => io.log(`${label}: ${d} disconnected; waiting for the next connection`),
          });
          label = `tcp:${hostPort(end.address.host, end.address.port)}`;
          opened.push({ label, end });
        } else if (s.kind === 'connect') {
          const end = await connectTcpEnd(s.host, s.port).catch((e: Error) => {
            throw new NoDeviceError(name, `cannot connect to ${name}: ${e.message}`, errnoOf(e));
          });
          opened.push({ label: name, end });
        } else {
          const end = await serialEnd(s.path, baud).catch((e: Error) => {
            throw new NoDeviceError(name, `cannot open ${name}: ${e.message}`, errnoOf(e));
          });
          opened.push({ label: name, end });
        }
      }
      if (pcapPath !== undefined) pcap = PcapWriter.open(pcapPath);
    } catch (e) {
      await closeAll();
      throw e;
    }
    const ready: MonitorReady = { event: 'ready', a: opened[0]!.label, b: opened[1]!.label, pcap: pcapPath ?? null, pid: process.pid };
    io.ready(ready, `monitor: device side ${ready.a} <-> host side ${ready.b}${pcapPath ? `, capture to ${pcapPath}` : ''}; Ctrl-C to stop`);

    // stdout carries the frames (a line each, or a JSON object each); the log goes to stderr. A
    // reader that falls behind (a pager, a paused terminal, a flood of tiny frames) gets a line
    // saying how many were left out, not a monitor that queues every line until memory runs out.
    const output = new FrameOutput(process.stdout, (n) =>
      io.json ? JSON.stringify({ event: 'skipped', frames: n }) : `          ${n} frames not shown: the output was not read fast enough (the relay and the capture carry on)`,
    );
    const capture = (raw: PcapFrame | undefined) => {
      if (!raw || !pcap || !capturing) return;
      try {
        pcap.write(raw);
      } catch (e) {
        // A full disk or a pulled drive stops the capture, not the monitor or the relay.
        io.log(`capture ${pcap.path} stopped after ${pcap.records} records: ${(e as Error).message}`);
        capturing = false;
        pcap.close();
      }
    };
    const monitor = new LinkMonitor({
      onFrame: (view, raw) => {
        capture(raw);
        output.line(io.json ? JSON.stringify({ event: 'frame', ...view }) : formatFrame(view));
      },
      // A shard goes to the capture only: its frame gets the line once complete.
      onShard: capture,
    });

    let reason = 'stopped';
    // Unpaced (no baud): the monitor must not change the line's timing.
    const relay = joinCable(opened[0]!.end, opened[1]!.end, {
      tap: (from, bytes) => monitor.push(from === 'a' ? 'device->host' : 'host->device', bytes),
    });
    const why = await Promise.race([io.stopped.then(() => undefined), relay.ended]);
    if (why) {
      reason = why.message;
      io.log(`relay ended: ${why.message}`);
    }
    await relay.close();
    await closeAll();
    output.flush();
    const end: MonitorEnd = {
      event: 'end',
      reason,
      'host->device': monitor.stats['host->device'],
      'device->host': monitor.stats['device->host'],
      pcapRecords: pcap ? pcap.records : null,
      framesNotShown: output.skipped,
    };
    if (io.json) process.stdout.write(JSON.stringify(end) + '\n');
    else {
      io.log(summary('host->device', end['host->device']));
      io.log(summary('device->host', end['device->host']));
      if (pcap) io.log(`${pcap.records} records written to ${pcap.path}`);
      if (output.skipped > 0) io.log(`${output.skipped} frames not shown: the output was not read fast enough`);
    }
    return ready;
  },
});
