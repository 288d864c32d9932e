//! The edu device's registers (QEMU `docs/specs/edu.rst`), as typed values.

/// A register: its offset in BAR0 and its width, checked at compile time to be
/// naturally aligned and inside the 1 MiB BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg32(u64);

/// A 64-bit register (only at 0x80 and above, where edu takes 8-byte accesses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg64(u64);

/// edu's BAR0 size.
pub const BAR0_LEN: u64 = 1 << 20;

impl Reg32 {
    const fn at(offset: u64) -> Self {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= BAR0_LEN,
            "misplaced 32-bit register"
        );
        Self(offset)
    }

    /// The offset in BAR0.
    pub const fn offset(self) -> u64 {
        self.0
    }
}

impl Reg64 {
    const fn at(offset: u64) -> Self {
        assert!(
            offset.is_multiple_of(8) && offset >= 0x80 && offset + 8 <= BAR0_LEN,
            "misplaced 64-bit register"
        );
        Self(offset)
    }

    /// The offset in BAR0.
    pub const fn offset(self) -> u64 {
        self.0
    }
}

/// Identification, read-only: `0xRRrr00ed` (major, minor, `ed`).
pub const ID: Reg32 = Reg32::at(0x00);
/// Liveness: reads back the bitwise inverse of the last value written.
pub const LIVENESS: Reg32 = Reg32::at(0x04);
/// Factorial: write n, read n! once [`STATUS_COMPUTING`] clears.
pub const FACTORIAL: Reg32 = Reg32::at(0x08);
/// Status: [`STATUS_COMPUTING`] and [`STATUS_IRQ_ON_FACTORIAL`].
pub const STATUS: Reg32 = Reg32::at(0x20);
/// Interrupt status, read-only: the bits raised and not yet acknowledged.
pub const IRQ_STATUS: Reg32 = Reg32::at(0x24);
/// Raise interrupt: the value is ORed into [`IRQ_STATUS`].
pub const IRQ_RAISE: Reg32 = Reg32::at(0x60);
/// Acknowledge interrupt: clears the bits written from [`IRQ_STATUS`].
pub const IRQ_ACK: Reg32 = Reg32::at(0x64);
/// DMA source address.
pub const DMA_SRC: Reg64 = Reg64::at(0x80);
/// DMA destination address.
pub const DMA_DST: Reg64 = Reg64::at(0x88);
/// DMA byte count.
pub const DMA_COUNT: Reg64 = Reg64::at(0x90);
/// DMA command: [`DmaCommand`].
pub const DMA_CMD: Reg64 = Reg64::at(0x98);

/// [`STATUS`]: a factorial is being computed.
pub const STATUS_COMPUTING: u32 = 0x01;
/// [`STATUS`]: raise interrupt 0x01 when the factorial is done.
pub const STATUS_IRQ_ON_FACTORIAL: u32 = 0x80;
/// The interrupt status bit raised by a finished factorial.
pub const IRQ_FACTORIAL: u32 = 0x01;
/// The interrupt status bit raised by a finished DMA.
pub const IRQ_DMA: u32 = 0x100;

/// The DMA command register's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaCommand(u64);

impl DmaCommand {
    const START: u64 = 0x1;
    const FROM_DEVICE: u64 = 0x2;
    const IRQ: u64 = 0x4;

    /// Start a transfer from RAM into the device's buffer.
    pub const fn to_device() -> Self {
        Self(Self::START)
    }

    /// Start a transfer from the device's buffer into RAM.
    pub const fn from_device() -> Self {
        Self(Self::START | Self::FROM_DEVICE)
    }

    /// Also raise [`IRQ_DMA`] when done.
    pub const fn with_interrupt(self) -> Self {
        Self(self.0 | Self::IRQ)
    }

    /// The raw value.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether a read-back value says the transfer is still running.
    pub const fn running(raw: u64) -> bool {
        raw & Self::START != 0
    }
}

/// The device's internal buffer, as the device addresses it.
pub const WINDOW_BASE: u64 = 0x40000;
/// The internal buffer's size.
pub const WINDOW_LEN: u64 = 4096;
