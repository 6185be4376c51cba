//! The CPU architectures labboot makes script images for, with U-Boot's `IH_ARCH_*` codes.

use std::fmt;
use std::str::FromStr;

/// A target architecture, named as `mkimage -A` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// 32-bit ARM (`-A arm`).
    Arm,
    /// 64-bit ARM (`-A arm64`).
    Arm64,
    /// 32-bit x86 (`-A x86`).
    X86,
    /// 64-bit x86 (`-A x86_64`).
    X86_64,
    /// RISC-V (`-A riscv`).
    Riscv,
}

impl Arch {
    /// Every supported architecture, in `mkimage -A` spelling order.
    pub const ALL: [Arch; 5] = [Arch::Arm, Arch::Arm64, Arch::X86, Arch::X86_64, Arch::Riscv];

    /// The `ih_arch` byte of the image header (U-Boot's `IH_ARCH_*`).
    pub fn code(self) -> u8 {
        match self {
            Arch::Arm => 2,
            Arch::X86 => 3,
            Arch::Arm64 => 22,
            Arch::X86_64 => 24,
            Arch::Riscv => 26,
        }
    }

    /// The name `mkimage -A` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Arm => "arm",
            Arch::Arm64 => "arm64",
            Arch::X86 => "x86",
            Arch::X86_64 => "x86_64",
            Arch::Riscv => "riscv",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The architecture name was not one labboot knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture {0:?} (expected one of arm, arm64, x86, x86_64, riscv)")]
pub struct UnknownArch(pub String);

impl FromStr for Arch {
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arm" => Ok(Arch::Arm),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            "x86" | "i386" => Ok(Arch::X86),
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "riscv" => Ok(Arch::Riscv),
            other => Err(UnknownArch(other.to_string())),
        }
    }
}
