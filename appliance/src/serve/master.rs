//! The boot script of an idle board: the master image's kernel and labboot initrd over TFTP,
//! its root over NBD (`master`, copy-on-write per board), and on the kernel command line the
//! board's identity, the agent's address and the card's token (`${board_token}`, which U-Boot
//! expands from the identity file, so the appliance never writes a token into a script).

use std::net::IpAddr;

use super::config::ApplianceConfig;

/// What the master boot needs to know.
#[derive(Debug, Clone)]
pub struct MasterBoot {
    server_ip: IpAddr,
    nbd_port: u16,
    http_port: u16,
    bootargs: String,
    boot_command: String,
    kernel: String,
    initrd: String,
    dtb: Option<String>,
    interval: u64,
}

impl MasterBoot {
    /// From the config and the ports the servers listen on.
    pub fn new(
        config: &ApplianceConfig,
        server_ip: IpAddr,
        nbd_port: u16,
        http_port: u16,
    ) -> MasterBoot {
        let name = |p: &std::path::Path| p.to_string_lossy().trim_start_matches('/').to_string();
        MasterBoot {
            server_ip,
            nbd_port,
            http_port,
            bootargs: config.master.bootargs.clone(),
            boot_command: config.master.boot_command.clone(),
            kernel: name(&config.master.kernel),
            initrd: name(&config.master.initrd),
            dtb: config.master.dtb.as_deref().map(name),
            interval: config.agent.interval,
        }
    }

    /// The agent's base URL.
    pub fn agent_url(&self) -> String {
        format!("http://{}:{}", self.server_ip, self.http_port)
    }

    /// The script text for `board`.
    pub fn script(&self, board: &str) -> String {
        let fdt = match &self.dtb {
            Some(d) => {
                format!("tftpboot ${{fdt_addr_r}} labboot/master/{d}\nsetenv labboot_fdt ${{fdt_addr_r}}\n")
            }
            None => "setenv labboot_fdt ${fdtcontroladdr}\n".to_string(),
        };
        format!(
            "# labboot: board {board} is idle: the master image (kernel + initrd over TFTP, root over NBD).\n\
             echo \"labboot: booting the master image\"\n\
             setenv tftpwindowsize 16\n\
             tftpboot ${{kernel_addr_r}} labboot/master/{kernel}\n\
             {fdt}\
             tftpboot ${{ramdisk_addr_r}} labboot/master/{initrd}\n\
             setenv bootargs \"{args} labboot.board=${{board_id}} labboot.root=nbd:{ip}:{nbd}/master labboot.agent={agent} labboot.token=${{board_token}} labboot.interval={interval}\"\n\
             {boot} ${{kernel_addr_r}} ${{ramdisk_addr_r}}:${{filesize}} ${{labboot_fdt}}\n",
            kernel = self.kernel,
            initrd = self.initrd,
            args = self.bootargs,
            ip = self.server_ip,
            nbd = self.nbd_port,
            agent = self.agent_url(),
            interval = self.interval,
            boot = self.boot_command,
        )
    }
}

/// The script of a board in maintenance: it says so and waits at the console (Ctrl-C leaves the
/// wait for the U-Boot prompt).
pub fn maintenance_script(board: &str) -> String {
    format!(
        "# labboot: board {board} is in maintenance.\n\
         echo \"labboot: board {board} is in maintenance: no network boot\"\n\
         echo \"labboot: press Ctrl-C for the U-Boot prompt; 'labboot board maintenance {board} off' boots it again\"\n\
         while true; do sleep 3600; done\n"
    )
}
