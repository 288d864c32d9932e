//! NVMe completion status: the status code type and code, with the
//! specification's names for the common ones.

/// A command's completion status (the status field without the phase tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    /// Status Code Type (bits 11:9 of the completion's status word).
    pub fn code_type(self) -> u8 {
        ((self.0 >> 8) & 0x7) as u8
    }

    /// Status Code (bits 8:1).
    pub fn code(self) -> u8 {
        (self.0 & 0xff) as u8
    }

    /// Do Not Retry.
    pub fn do_not_retry(self) -> bool {
        self.0 & (1 << 14) != 0
    }

    /// Whether the command succeeded.
    pub fn is_success(self) -> bool {
        self.code_type() == 0 && self.code() == 0
    }

    /// The specification's name of the status, where this driver knows it.
    pub fn name(self) -> &'static str {
        match (self.code_type(), self.code()) {
            (0, 0x00) => "Successful Completion",
            (0, 0x01) => "Invalid Command Opcode",
            (0, 0x02) => "Invalid Field in Command",
            (0, 0x03) => "Command ID Conflict",
            (0, 0x04) => "Data Transfer Error",
            (0, 0x05) => "Commands Aborted due to Power Loss Notification",
            (0, 0x06) => "Internal Error",
            (0, 0x07) => "Command Abort Requested",
            (0, 0x08) => "Command Aborted due to SQ Deletion",
            (0, 0x0b) => "Invalid Namespace or Format",
            (0, 0x0d) => "Invalid SGL Segment Descriptor",
            (0, 0x13) => "PRP Offset Invalid",
            (0, 0x80) => "LBA Out of Range",
            (0, 0x81) => "Capacity Exceeded",
            (0, 0x82) => "Namespace Not Ready",
            (1, 0x00) => "Completion Queue Invalid",
            (1, 0x01) => "Invalid Queue Identifier",
            (1, 0x02) => "Invalid Queue Size",
            (1, 0x03) => "Abort Command Limit Exceeded",
            (1, 0x08) => "Invalid Interrupt Vector",
            (1, 0x0c) => "Invalid Queue Deletion",
            (2, 0x80) => "Write Fault",
            (2, 0x81) => "Unrecovered Read Error",
            (2, 0x86) => "Access Denied",
            (0, _) => "Generic Command Status (unknown code)",
            (1, _) => "Command Specific Status (unknown code)",
            (2, _) => "Media and Data Integrity Error (unknown code)",
            (3, _) => "Path Related Status",
            _ => "Vendor Specific or reserved status",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (type {:#x}, code {:#04x}{})",
            self.name(),
            self.code_type(),
            self.code(),
            if self.do_not_retry() {
                ", do not retry"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decode_with_their_names() {
        assert!(Status(0).is_success());
        let out_of_range = Status(0x80);
        assert_eq!(out_of_range.name(), "LBA Out of Range");
        let invalid_ns = Status(0x0b | 1 << 14);
        assert_eq!(
            invalid_ns.to_string(),
            "Invalid Namespace or Format (type 0x0, code 0x0b, do not retry)"
        );
        let read_error = Status(2 << 8 | 0x81);
        assert_eq!(read_error.code_type(), 2);
        assert_eq!(read_error.name(), "Unrecovered Read Error");
    }
}
