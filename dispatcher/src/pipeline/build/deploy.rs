//! `deploy` blocks: tftp, nbd, nfs and downloads, in LAVA's shapes.

use super::{def, nothing, Builder, Def};
use crate::error::{Error, Result};
use crate::job::{Deploy, DeployTo};
use crate::pipeline::Step;

impl Builder<'_> {
    pub(super) fn deploy(&mut self, index: usize, d: &Deploy) -> Result<()> {
        // `to: downloads` only fetches files: LAVA accepts it on every device.
        if d.to != DeployTo::Downloads
            && !self.device.deploy_methods.is_empty()
            && !self
                .device
                .deploy_methods
                .iter()
                .any(|m| m == d.to.as_str())
        {
            return Err(Error::job(format!(
                "{}:{}: actions[{index}].deploy.to: the device {} has no '{}' deploy method (it has: {})",
                self.job.file,
                d.common.line,
                self.device.file,
                d.to.as_str(),
                self.device.deploy_methods.join(", ")
            )));
        }
        let blk = (index, &d.common);
        let with_tests = self.test_follows(index);
        let (class, name) = match d.to {
            DeployTo::Tftp => ("TftpAction", "tftp-deploy"),
            DeployTo::Nbd => ("NbdAction", "nbd-deploy"),
            DeployTo::Nfs => ("NfsAction", "nfs-deploy"),
            DeployTo::Downloads => ("DownloadsAction", "downloads"),
        };
        let top = self.push_top(
            def(class, name, "deploy the job's files", Step::Deploy),
            Some(blk),
        );
        let mut a = self.top.remove(top);
        match d.to {
            DeployTo::Tftp => {
                if with_tests {
                    self.overlay(&mut a, blk, true);
                }
                for art in [&d.ramdisk, &d.kernel, &d.dtb, &d.nfsrootfs, &d.modules]
                    .into_iter()
                    .flatten()
                {
                    self.download(&mut a, &art.key, &art.url, blk);
                }
                let p = self.child(
                    &mut a,
                    def(
                        "PrepareOverlayTftp",
                        "prepare-tftp-overlay",
                        "unpack the ramdisk or nfsrootfs and apply the overlay",
                        Step::Nothing("the preparation is done by the children"),
                    ),
                    Some(blk),
                );
                let mut prep = a.children.remove(p);
                self.child(&mut prep, extract_nfsrootfs(), Some(blk));
                self.child(
                    &mut prep,
                    nothing(
                        "ParsePersistentNFS",
                        "parse-persistent-nfs",
                        "no persistent NFS root: the job's export is its own",
                    ),
                    Some(blk),
                );
                self.child(
                    &mut prep,
                    nothing(
                        "ExtractRamdisk",
                        "extract-overlay-ramdisk",
                        "the ramdisk is never unpacked on the host: files are appended to its archive",
                    ),
                    Some(blk),
                );
                self.child(&mut prep, extract_modules(), Some(blk));
                if with_tests {
                    self.child(&mut prep, apply_overlay(), Some(blk));
                }
                if d.kernel.as_ref().is_some_and(|k| k.kernel_type.is_some()) {
                    self.prepare_kernel(&mut prep, blk);
                }
                self.child(
                    &mut prep,
                    nothing(
                        "ConfigurePreseedFile",
                        "configure-preseed-file",
                        "no installer preseed file in labboot jobs",
                    ),
                    Some(blk),
                );
                self.child(
                    &mut prep,
                    def(
                        "CompressRamdisk",
                        "compress-ramdisk",
                        "repack the ramdisk with the overlay and modules",
                        Step::CompressRamdisk,
                    ),
                    Some(blk),
                );
                a.children.insert(p, prep);
                if self.any_test() {
                    self.child(&mut a, deploy_device_env(), Some(blk));
                }
            }
            DeployTo::Nbd => {
                for art in [&d.initrd, &d.ramdisk, &d.kernel, &d.dtb, &d.nbdroot]
                    .into_iter()
                    .flatten()
                {
                    self.download(&mut a, &art.key, &art.url, blk);
                }
                self.overlay(&mut a, blk, with_tests);
                if with_tests {
                    // labboot's addition: the overlay travels in the initrd, whose /init copies
                    // it into the root (LAVA would need transfer_overlay over the console).
                    self.child(
                        &mut a,
                        def(
                            "CompressRamdisk",
                            "compress-ramdisk",
                            "repack the initrd with the overlay",
                            Step::CompressRamdisk,
                        ),
                        Some(blk),
                    );
                }
                if d.kernel.as_ref().is_some_and(|k| k.kernel_type.is_some()) {
                    self.prepare_kernel(&mut a, blk);
                }
                self.child(
                    &mut a,
                    def(
                        "XnbdAction",
                        "xnbd-server-deploy",
                        "add the job's NBD export",
                        Step::NbdExport,
                    ),
                    Some(blk),
                );
            }
            DeployTo::Nfs => {
                for art in [&d.nfsrootfs, &d.modules].into_iter().flatten() {
                    self.download(&mut a, &art.key, &art.url, blk);
                }
                self.child(&mut a, extract_nfsrootfs(), Some(blk));
                self.overlay(&mut a, blk, with_tests);
                self.child(&mut a, extract_modules(), Some(blk));
                self.child(&mut a, apply_overlay(), Some(blk));
                if self.any_test() {
                    self.child(&mut a, deploy_device_env(), Some(blk));
                }
            }
            DeployTo::Downloads => {
                for art in d.artifacts() {
                    self.download(&mut a, &art.key, &art.url, blk);
                }
            }
        }
        self.top.insert(top, a);
        Ok(())
    }
}

/// Actions the tftp and nfs deploys share, as LAVA names them.
fn extract_nfsrootfs() -> Def {
    def(
        "ExtractNfsRootfs",
        "extract-nfsrootfs",
        "unpack the nfsrootfs into the job's NFS export",
        Step::ExtractNfsRootfs,
    )
}

fn extract_modules() -> Def {
    def(
        "ExtractModules",
        "extract-modules",
        "unpack the kernel modules into the root filesystem",
        Step::ExtractModules,
    )
}

fn apply_overlay() -> Def {
    def(
        "ApplyOverlayTftp",
        "apply-overlay-tftp",
        "copy the overlay into the nfsrootfs",
        Step::ApplyOverlay,
    )
}

fn deploy_device_env() -> Def {
    nothing(
        "DeployDeviceEnvironment",
        "deploy-device-env",
        "no device environment file in labboot jobs",
    )
}
