// `qkt ports`: what a field laptop can reach: serial ports (with VID:PID), USB devices through
// WebUSB, and removable drives (carriers). A source this machine lacks is reported, not fatal.
import { defineCommand } from '../command.js';
import { listPorts } from '../../ports/list.js';
import type { PortsReport } from '../../ports/list.js';
import { printable } from '../../peer-text.js';

export default defineCommand<PortsReport>({
  run: () => listPorts(),
  render(r) {
    const unavailable = (s: { available: boolean; reason?: string }) => (s.available ? '' : ` (unavailable: ${s.reason ?? 'unknown'})`);
    const lines = [`Serial ports${unavailable(r.serial)}:`];
    if (r.serial.ports.length === 0) lines.push('  none');
    for (const p of r.serial.ports) {
      const id = p.vendorId && p.productId ? ` ${p.vendorId}:${p.productId}` : '';
      lines.push(`  ${printable(p.path)}${id}${p.manufacturer ? `  ${printable(p.manufacturer, 64)}` : ''}${p.serialNumber ? `  s/n ${printable(p.serialNumber, 64)}` : ''}`);
    }
    lines.push(`USB devices${unavailable(r.usb)}:`);
    if (r.usb.devices.length === 0) lines.push('  none');
    for (const d of r.usb.devices) lines.push(`  ${d.vendorId}:${d.productId}${d.manufacturer ? `  ${printable(d.manufacturer, 64)}` : ''}${d.product ? ` ${printable(d.product, 64)}` : ''}`);
    lines.push(`Removable drives${unavailable(r.drives)}:`);
    if (r.drives.drives.length === 0) lines.push('  none');
    for (const d of r.drives.drives) {
      const size = d.sizeBytes ? `  ${(d.sizeBytes / 1e9).toFixed(1)} GB` : '';
      lines.push(`  ${d.device}${d.mountpoint ? ` on ${d.mountpoint}` : '  (not mounted)'}${d.label ? `  "${printable(d.label, 64)}"` : ''}${d.fstype ? `  ${d.fstype}` : ''}${size}`);
    }
    return lines.join('\n');
  },
});
