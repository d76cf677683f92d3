// Firmware identification reported in the parameters and status replies.
export const FIRMWARE_NAME = 'qkt-fw';
export const FIRMWARE_VERSION = '0.1.0';
export const FIRMWARE = `${FIRMWARE_NAME} ${FIRMWARE_VERSION}`;
