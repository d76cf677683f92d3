// listPorts: each source with its tools present, missing or failing, on fakes; and a real call
// that must not throw on a machine without udevadm, USB bus or removable drives.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeWebUsbDevice } from '../transports/fake-webusb.js';
import { drivesFromLsblk, listPorts, listRemovableDrives, listSerialPorts, listUsbDevices } from './list.js';

const tmp = await mkdtemp(join(tmpdir(), 'qkt-ports-'));
t.teardown(() => rm(tmp, { recursive: true, force: true }));

t.test('serial via SerialPort.list: ids lowercased, empty fields left out', async (t) => {
  const r = await listSerialPorts({
    listSerial: async () => [{ path: '/dev/ttyACM0', manufacturer: 'STMicro', vendorId: '0483', productId: '5740', serialNumber: 'X1', pnpId: 'usb-STM-if00' }, { path: '/dev/ttyS0', manufacturer: undefined }],
  });
  t.same(r, {
    available: true,
    ports: [{ path: '/dev/ttyACM0', manufacturer: 'STMicro', serialNumber: 'X1', vendorId: '0483', productId: '5740', pnpId: 'usb-STM-if00' }, { path: '/dev/ttyS0' }],
  });
});

t.test('serial without udevadm: unavailable with the reason, /dev scanned for ttyUSB/ttyACM', async (t) => {
  const dev = join(tmp, 'dev');
  await mkdir(dev, { recursive: true });
  for (const n of ['ttyUSB10', 'ttyUSB2', 'ttyACM0', 'ttyS0', 'tty1', 'null']) await writeFile(join(dev, n), '');
  const r = await listSerialPorts({ listSerial: async () => Promise.reject(new Error('spawn udevadm ENOENT')), devDir: dev });
  t.equal(r.available, false);
  t.match(r.reason, /udevadm ENOENT/);
  t.same(r.ports.map((p) => p.path), ['ttyACM0', 'ttyUSB2', 'ttyUSB10'].map((n) => join(dev, n)));
});

t.test('usb via WebUSB getDevices; no bus -> unavailable', async (t) => {
  const d = new FakeWebUsbDevice({ vendorId: 0x1209, productId: 0xabcd, serialNumber: 'S1', productName: 'qkt terminal' });
  const r = await listUsbDevices({ usb: () => ({ getDevices: async () => [d] }) });
  t.same(r, { available: true, devices: [{ vendorId: '1209', productId: 'abcd', manufacturer: 'qkt', product: 'qkt terminal', serialNumber: 'S1' }] });
  const none = await listUsbDevices({ usb: () => ({ getDevices: () => Promise.reject(new Error('/sys/bus/usb/devices/ not found')) }) });
  t.same(none, { available: false, reason: 'cannot list USB devices: /sys/bus/usb/devices/ not found', devices: [] });
});

// Shape of `lsblk -J -b -o NAME,TYPE,RM,HOTPLUG,SIZE,MOUNTPOINT,LABEL,FSTYPE` with a USB stick,
// a card reader without media partitions, a fixed disk and a loop device.
const lsblkJson = JSON.stringify({
  blockdevices: [
    { name: 'sda', type: 'disk', rm: false, hotplug: false, size: 256060514304, mountpoint: null, label: null, fstype: null, children: [{ name: 'sda1', type: 'part', rm: false, hotplug: false, size: 256059465728, mountpoint: '/', label: null, fstype: 'ext4' }] },
    { name: 'sdb', type: 'disk', rm: true, hotplug: true, size: 16008609792, mountpoint: null, label: null, fstype: null, children: [{ name: 'sdb1', type: 'part', rm: true, hotplug: true, size: 16007561216, mountpoint: '/media/field/CARRIER', label: 'CARRIER', fstype: 'vfat' }] },
    { name: 'sdc', type: 'disk', rm: '0', hotplug: '1', size: '7948206080', mountpoint: null, label: 'RAW', fstype: 'ext4' },
    { name: 'loop0', type: 'loop', rm: false, hotplug: false, size: 1048576, mountpoint: '/mnt/img', label: null, fstype: 'ext4' },
    { name: 'sr0', type: 'rom', rm: true, hotplug: true, size: 1073741312, mountpoint: null, label: null, fstype: null },
  ],
});

t.test('drives from lsblk: removable or hotplug disks, per partition, old and new field types', async (t) => {
  t.same(drivesFromLsblk(lsblkJson), [
    { device: '/dev/sdb1', mountpoint: '/media/field/CARRIER', label: 'CARRIER', sizeBytes: 16007561216, removable: true, fstype: 'vfat' },
    { device: '/dev/sdc', label: 'RAW', sizeBytes: 7948206080, removable: true, fstype: 'ext4' },
  ]);
  const r = await listRemovableDrives({ lsblk: async () => lsblkJson });
  t.equal(r.available, true);
  t.equal(r.drives.length, 2);
});

t.test('drives from sysfs + /proc/mounts when lsblk is missing', async (t) => {
  const sys = join(tmp, 'sys', 'block');
  const dev = join(tmp, 'sysdev');
  await mkdir(join(sys, 'sdb', 'sdb1'), { recursive: true });
  await mkdir(join(sys, 'vda'), { recursive: true });
  await mkdir(join(dev, 'disk', 'by-label'), { recursive: true });
  await writeFile(join(sys, 'sdb', 'removable'), '1\n');
  await writeFile(join(sys, 'sdb', 'size'), '31266816\n');
  await writeFile(join(sys, 'sdb', 'sdb1', 'size'), '31264768\n');
  await writeFile(join(sys, 'vda', 'removable'), '0\n');
  await symlink('../../sdb1', join(dev, 'disk', 'by-label', 'KEY\\x20CARRIER'));
  const mounts = join(tmp, 'mounts');
  await writeFile(mounts, '/dev/vda / ext4 rw 0 0\n/dev/sdb1 /media/field/KEY\\040CARRIER vfat rw 0 0\n');
  const r = await listRemovableDrives({ lsblk: async () => undefined, sysBlockDir: sys, procMounts: mounts, devDir: dev });
  t.same(r, {
    available: true,
    drives: [{ device: '/dev/sdb1', mountpoint: '/media/field/KEY CARRIER', label: 'KEY CARRIER', sizeBytes: 31264768 * 512, removable: true, fstype: 'vfat' }],
  });
});

t.test('drives: neither lsblk nor sysfs -> unavailable, not a crash', async (t) => {
  const r = await listRemovableDrives({ lsblk: async () => undefined, sysBlockDir: join(tmp, 'nope') });
  t.equal(r.available, false);
  t.match(r.reason, /cannot list drives/);
});

t.test('the real machine: every source answers, none throws, and what it lists exists', async (t) => {
  const r = await listPorts();
  // Each claim is checked against the machine itself (paths, sysfs, /proc/mounts), not its type.
  for (const p of r.serial.ports) t.ok(existsSync(p.path), `serial ${p.path} exists`);
  if (!r.serial.available) t.match(r.serial.reason, /^serial port details unavailable \(.+\); listed /);
  if (process.platform === 'linux') {
    t.equal(r.usb.available, existsSync('/sys/bus/usb/devices'), 'USB listed exactly when the machine has a USB bus');
    t.equal(r.drives.available, true, 'Linux always has /sys/block at least');
  }
  if (!r.usb.available) {
    t.match(r.usb.reason, /^cannot list USB devices: ./);
    t.same(r.usb.devices, []);
  }
  for (const d of r.usb.devices) t.match(d, { vendorId: /^[0-9a-f]{4}$/, productId: /^[0-9a-f]{4}$/ });
  const mounted = existsSync('/proc/mounts') ? readFileSync('/proc/mounts', 'utf8') : '';
  for (const d of r.drives.drives) {
    t.ok(existsSync(d.device), `drive ${d.device} exists`);
    if (d.mountpoint && mounted) t.ok(mounted.split('\n').some((l) => l.split(' ')[1]?.replace(/\\040/g, ' ') === d.mountpoint), `${d.mountpoint} is in /proc/mounts`);
  }
});
