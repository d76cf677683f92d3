// Typed errors of the flash layer. Messages name addresses and sectors, never data bytes
// (a flash page can hold key material).

/** Why a flash operation was refused. Codes are stable; never renumber or rename. */
export type FlashErrorCode =
  /** program() crosses a page boundary, or is empty. */
  | 'ALIGNMENT'
  /** strict mode: program() would need to set a bit (1 <- 0); only erase does that on NOR. */
  | 'NOT_ERASED'
  /** address, length or sector index outside the device. */
  | 'OUT_OF_RANGE'
  /** the sector reached its erase endurance and went bad; erase and program fail from then on. */
  | 'WORN_OUT'
  /** the sector is bad (injected fault); erase and program fail. */
  | 'BAD_SECTOR'
  /** an image file or option does not match the geometry asked for. */
  | 'GEOMETRY';

/** A refused flash operation. The device is unchanged by the refused call. */
export class FlashError extends Error {
  override readonly name = 'FlashError';
  constructor(
    readonly code: FlashErrorCode,
    message: string,
    /** The sector concerned, when there is one. */
    readonly sector?: number,
  ) {
    super(message);
  }
}

/**
 * Power was lost. Thrown by the operation that was cut (which may have been applied partly:
 * a torn program or erase) and by every later operation until the device is rebooted.
 */
export class PowerCutError extends Error {
  override readonly name = 'PowerCutError';
  constructor(message = 'power lost') {
    super(message);
  }
}
