// What `qkt ports` shows a field engineer: serial ports, USB devices and removable drives. Each
// source that cannot be read here says so (available: false + reason) instead of failing the rest.
import { execFile } from 'node:child_process';
import { readFile, readdir, readlink } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { SerialPort } from 'serialport';
import { WebUSB } from 'usb';
import type { WebUsbDeviceLike, WebUsbLike } from '../transports/webusb.js';

/** USB ids are lowercase 4-digit hex strings everywhere, as udev, lsusb and serialport print them. */
export interface SerialPortEntry {
  path: string;
  manufacturer?: string;
  serialNumber?: string;
  vendorId?: string;
  productId?: string;
  pnpId?: string;
}
export interface UsbDeviceEntry {
  vendorId: string;
  productId: string;
  manufacturer?: string;
  product?: string;
  serialNumber?: string;
}
export interface DriveEntry {
  /** Block device of the filesystem, e.g. /dev/sdb1 (the disk itself when it has no partitions). */
  device: string;
  mountpoint?: string;
  label?: string;
  sizeBytes?: number;
  removable: true;
  fstype?: string;
}
export interface Source {
  available: boolean;
  reason?: string;
}
export interface PortsReport {
  serial: Source & { ports: SerialPortEntry[] };
  usb: Source & { devices: UsbDeviceEntry[] };
  drives: Source & { drives: DriveEntry[] };
}

/** The I/O behind listPorts, injectable so tests run on any machine. */
export interface PortsDeps {
  /** Default SerialPort.list() (needs udevadm on Linux). */
  listSerial?: () => Promise<Array<{ path: string; manufacturer?: string | undefined; serialNumber?: string | undefined; vendorId?: string | undefined; productId?: string | undefined; pnpId?: string | undefined }>>;
  /** Default '/dev'; scanned for ttyUSB* and ttyACM* when listSerial fails. */
  devDir?: string;
  /** Default a WebUSB with allowAllDevices. */
  usb?: () => WebUsbLike;
  /** `lsblk -J -b ...` output, or undefined when lsblk is not installed. */
  lsblk?: () => Promise<string | undefined>;
  /** Default '/sys/block', read when lsblk is missing. */
  sysBlockDir?: string;
  /** Default '/proc/mounts'. */
  procMounts?: string;
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
const hex4 = (n: number) => n.toString(16).padStart(4, '0');
/** Copy only the fields that are set: `--json` output carries no nulls or empty strings. */
function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== null && v !== '')) as T;
}

export async function listSerialPorts(deps: PortsDeps = {}): Promise<PortsReport['serial']> {
  try {
    const infos = await (deps.listSerial ?? (() => SerialPort.list()))();
    const ports = infos.map((p) =>
      defined({
        path: p.path,
        manufacturer: p.manufacturer,
        serialNumber: p.serialNumber,
        vendorId: p.vendorId?.toLowerCase(),
        productId: p.productId?.toLowerCase(),
        pnpId: p.pnpId,
      }),
    );
    return { available: true, ports };
  } catch (error) {
    // No udevadm (containers, minimal images): USB serial adapters and CDC-ACM devices still
    // show up as /dev/ttyUSB* and /dev/ttyACM*, just without their ids.
    const devDir = deps.devDir ?? '/dev';
    const names = await readdir(devDir).catch(() => [] as string[]);
    const ports = names
      .filter((n) => /^tty(USB|ACM)\d+$/.test(n))
      .sort((x, y) => x.localeCompare(y, 'en', { numeric: true }))
      .map((n) => ({ path: join(devDir, n) }));
    return {
      available: false,
      reason: `serial port details unavailable (${message(error)}); listed ${devDir}/ttyUSB* and ${devDir}/ttyACM* only`,
      ports,
    };
  }
}

export async function listUsbDevices(deps: PortsDeps = {}): Promise<PortsReport['usb']> {
  try {
    const usb = deps.usb ? deps.usb() : (new WebUSB({ allowAllDevices: true }) as unknown as WebUsbLike);
    const devices = await usb.getDevices();
    // String descriptors can fail to read on a device that is busy or going away; ids cannot.
    const str = (d: WebUsbDeviceLike, key: 'manufacturerName' | 'productName' | 'serialNumber') => {
      try {
        return d[key] ?? undefined;
      } catch {
        return undefined;
      }
    };
    return {
      available: true,
      devices: devices.map((d) =>
        defined({
          vendorId: hex4(d.vendorId),
          productId: hex4(d.productId),
          manufacturer: str(d, 'manufacturerName'),
          product: str(d, 'productName'),
          serialNumber: str(d, 'serialNumber'),
        }),
      ),
    };
  } catch (error) {
    return { available: false, reason: `cannot list USB devices: ${message(error)}`, devices: [] };
  }
}

function runLsblk(): Promise<string | undefined> {
  return new Promise((resolvePromise, reject) =>
    execFile(
      'lsblk',
      ['-J', '-b', '-o', 'NAME,TYPE,RM,HOTPLUG,SIZE,MOUNTPOINT,LABEL,FSTYPE'],
      { timeout: 5000 },
      (error, stdout) => {
        if (error && (error as NodeJS.ErrnoException).code === 'ENOENT') resolvePromise(undefined);
        else if (error) reject(error);
        else resolvePromise(stdout);
      },
    ),
  );
}

interface LsblkDevice {
  name: string;
  type?: string;
  rm?: boolean | string | number;
  hotplug?: boolean | string | number;
  size?: number | string | null;
  mountpoint?: string | null;
  label?: string | null;
  fstype?: string | null;
  children?: LsblkDevice[];
}

// Older lsblk prints "1"/"0" and sizes as strings; newer prints booleans and numbers.
const flag = (v: unknown) => v === true || v === '1' || v === 1;
const num = (v: unknown) => (v === null || v === undefined || v === '' ? undefined : Number(v));

/** Removable or hot-plugged disks (USB sticks, SD cards), one entry per partition. */
export function drivesFromLsblk(json: string): DriveEntry[] {
  const parsed = JSON.parse(json) as { blockdevices?: LsblkDevice[] };
  const out: DriveEntry[] = [];
  const entry = (d: LsblkDevice): DriveEntry =>
    defined({
      device: `/dev/${d.name}`,
      mountpoint: d.mountpoint ?? undefined,
      label: d.label ?? undefined,
      sizeBytes: num(d.size),
      removable: true as const,
      fstype: d.fstype ?? undefined,
    });
  for (const disk of parsed.blockdevices ?? []) {
    // HOTPLUG too: many USB sticks and card readers report RM=0 but are hot-pluggable.
    if ((disk.type ?? 'disk') !== 'disk' || !(flag(disk.rm) || flag(disk.hotplug))) continue;
    if (disk.children?.length) out.push(...disk.children.map(entry));
    else out.push(entry(disk));
  }
  return out;
}

/** /proc/mounts escapes space, tab, newline and backslash as \ooo octal. */
const unescapeMount = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

async function drivesFromSysfs(sysBlockDir: string, procMounts: string, devDir: string): Promise<DriveEntry[]> {
  const mounts = new Map<string, { mountpoint: string; fstype: string }>();
  const mountText = await readFile(procMounts, 'utf8').catch(() => '');
  for (const line of mountText.split('\n')) {
    const [dev, mnt, fstype] = line.split(' ');
    if (dev && mnt && fstype && !mounts.has(dev)) mounts.set(dev, { mountpoint: unescapeMount(mnt), fstype });
  }
  // Labels from /dev/disk/by-label (udev makes them; names escape bytes as \xNN).
  const labels = new Map<string, string>();
  const byLabel = join(devDir, 'disk', 'by-label');
  for (const name of await readdir(byLabel).catch(() => [] as string[])) {
    const target = await readlink(join(byLabel, name)).catch(() => undefined);
    if (target) labels.set(basename(resolve(byLabel, target)), name.replace(/\\x([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16))));
  }
  const sectors = async (dir: string) => num((await readFile(join(dir, 'size'), 'utf8').catch(() => '')).trim());
  const out: DriveEntry[] = [];
  for (const disk of (await readdir(sysBlockDir)).sort()) {
    const removable = (await readFile(join(sysBlockDir, disk, 'removable'), 'utf8').catch(() => '0')).trim();
    if (removable !== '1') continue;
    const children = await readdir(join(sysBlockDir, disk)).catch(() => [] as string[]);
    const parts = children.filter((c) => c.startsWith(disk)).sort();
    for (const name of parts.length ? parts : [disk]) {
      const dir = name === disk ? join(sysBlockDir, disk) : join(sysBlockDir, disk, name);
      const size = await sectors(dir);
      const device = `/dev/${name}`;
      const m = mounts.get(device);
      out.push(
        defined({
          device,
          mountpoint: m?.mountpoint,
          label: labels.get(name),
          // sysfs counts 512-byte sectors whatever the device's own sector size.
          sizeBytes: size === undefined ? undefined : size * 512,
          removable: true as const,
          fstype: m?.fstype,
        }),
      );
    }
  }
  return out;
}

export async function listRemovableDrives(deps: PortsDeps = {}): Promise<PortsReport['drives']> {
  try {
    const json = await (deps.lsblk ?? runLsblk)();
    if (json !== undefined) return { available: true, drives: drivesFromLsblk(json) };
  } catch (error) {
    // lsblk present but failing: fall through to sysfs, which needs no tools.
    void error;
  }
  try {
    const drives = await drivesFromSysfs(deps.sysBlockDir ?? '/sys/block', deps.procMounts ?? '/proc/mounts', deps.devDir ?? '/dev');
    return { available: true, drives };
  } catch (error) {
    return { available: false, reason: `cannot list drives (no lsblk, no sysfs): ${message(error)}`, drives: [] };
  }
}

/** All three sources, read in parallel; never rejects. */
export async function listPorts(deps: PortsDeps = {}): Promise<PortsReport> {
  const [serial, usb, drives] = await Promise.all([listSerialPorts(deps), listUsbDevices(deps), listRemovableDrives(deps)]);
  return { serial, usb, drives };
}
