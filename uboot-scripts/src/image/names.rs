//! Human names of header codes, spelled as `dumpimage -l` prints them.

/// Name of an `ih_arch` code.
pub fn arch_name(code: u8) -> &'static str {
    match code {
        1 => "Alpha",
        2 => "ARM",
        3 => "Intel x86",
        4 => "IA64",
        5 => "MIPS",
        6 => "MIPS 64 Bit",
        7 => "PowerPC",
        11 => "SuperH",
        15 => "Blackfin",
        22 => "AArch64",
        24 => "AMD x86_64",
        26 => "RISC-V",
        _ => "Unknown Architecture",
    }
}

/// Name of an `ih_os` code.
pub fn os_name(code: u8) -> &'static str {
    match code {
        0 => "Invalid OS",
        1 => "OpenBSD",
        2 => "NetBSD",
        3 => "FreeBSD",
        5 => "Linux",
        17 => "U-Boot",
        20 => "QNX",
        27 => "ARM Trusted Firmware",
        29 => "OpenSBI",
        30 => "EFI Firmware",
        _ => "Unknown OS",
    }
}

/// Name of an `ih_type` code.
pub fn type_name(code: u8) -> &'static str {
    match code {
        1 => "Standalone Program",
        2 => "Kernel Image",
        3 => "RAMDisk Image",
        4 => "Multi-File Image",
        5 => "Firmware",
        6 => "Script",
        7 => "Filesystem Image",
        8 => "Flat Device Tree",
        _ => "Unknown Image",
    }
}

/// Name of an `ih_comp` code.
pub fn comp_name(code: u8) -> &'static str {
    match code {
        0 => "uncompressed",
        1 => "gzip compressed",
        2 => "bzip2 compressed",
        3 => "lzma compressed",
        4 => "lzo compressed",
        5 => "lz4 compressed",
        6 => "zstd compressed",
        _ => "Unknown Compression",
    }
}
