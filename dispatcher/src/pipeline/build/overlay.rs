//! The test overlay's sub-pipeline, downloads and the kernel conversion, shared by the deploys.

use super::{def, nothing, Builder};
use crate::job::{ActionBlock, BlockCommon, DefinitionSource};
use crate::pipeline::{Action, Step};

impl Builder<'_> {
    pub(super) fn overlay(
        &self,
        parent: &mut Action,
        blk: (usize, &BlockCommon),
        with_tests: bool,
    ) {
        let i = self.child(
            parent,
            def(
                "OverlayAction",
                "lava-overlay",
                "add the test shell scripts and definitions to the deployed system",
                Step::Nothing("the overlay is assembled by its children"),
            ),
            Some(blk),
        );
        if !with_tests {
            return;
        }
        let mut ov = parent.children.remove(i);
        if self.device.deploy_methods.iter().any(|m| m.contains("ssh")) {
            self.child(
                &mut ov,
                nothing(
                    "SshAuthorize",
                    "ssh-authorize",
                    "no ssh deployment in labboot: no key to authorize",
                ),
                Some(blk),
            );
        }
        self.child(
            &mut ov,
            nothing(
                "MultinodeOverlayAction",
                "lava-multinode-overlay",
                "single-board jobs only: no multinode scripts",
            ),
            Some(blk),
        );
        let t = self.child(
            &mut ov,
            def(
                "TestDefinitionAction",
                "test-definition",
                "load the test definitions into the overlay",
                Step::Nothing("the definitions are loaded by the children"),
            ),
            Some(blk),
        );
        let mut td = ov.children.remove(t);
        for (test_block, block) in self.job.actions.iter().enumerate() {
            let ActionBlock::Test(test) = block else {
                continue;
            };
            for (definition, d) in test.definitions.iter().enumerate() {
                let (class, name) = match d.source {
                    DefinitionSource::Git { .. } => ("GitRepoAction", "git-repo-action"),
                    DefinitionSource::Inline(_) => ("InlineRepoAction", "inline-repo-action"),
                    DefinitionSource::Url { .. } => ("UrlRepoAction", "url-repo-action"),
                };
                self.child(
                    &mut td,
                    def(
                        class,
                        name,
                        "fetch the test definition",
                        Step::Repo {
                            test_block,
                            definition,
                        },
                    ),
                    Some(blk),
                );
                self.child(
                    &mut td,
                    nothing(
                        "TestOverlayAction",
                        "test-overlay",
                        "the definition's files are written with the overlay",
                    ),
                    Some(blk),
                );
                self.child(
                    &mut td,
                    nothing(
                        "TestInstallAction",
                        "test-install-overlay",
                        "install steps are written into the definition's run script",
                    ),
                    Some(blk),
                );
                self.child(
                    &mut td,
                    nothing(
                        "TestRunnerAction",
                        "test-runscript-overlay",
                        "the run script is written with the overlay",
                    ),
                    Some(blk),
                );
            }
        }
        ov.children.insert(t, td);
        self.child(
            &mut ov,
            def(
                "CompressOverlay",
                "compress-overlay",
                "write the overlay: test runner, helper scripts, definitions",
                Step::WriteOverlay,
            ),
            Some(blk),
        );
        parent.children.insert(i, ov);
    }

    pub(super) fn download(
        &self,
        parent: &mut Action,
        key: &str,
        url: &str,
        blk: (usize, &BlockCommon),
    ) {
        let mut d = def(
            "DownloaderAction",
            "download-retry",
            "download with retry",
            Step::Nothing("the download is done by the child"),
        );
        d.retry = true;
        let i = self.child(parent, d, Some(blk));
        let mut dl = parent.children.remove(i);
        let http = url.starts_with("http://") || url.starts_with("https://");
        let mut leaf = if http {
            def(
                "HttpDownloadAction",
                "http-download",
                "download over http(s), checking the checksums",
                Step::Download { key: key.into() },
            )
        } else {
            def(
                "FileDownloadAction",
                "file-download",
                "copy a local file, checking the checksums",
                Step::Download { key: key.into() },
            )
        };
        leaf.url = Some(url.to_string());
        self.child(&mut dl, leaf, Some(blk));
        parent.children.insert(i, dl);
    }

    pub(super) fn prepare_kernel(&self, parent: &mut Action, blk: (usize, &BlockCommon)) {
        let i = self.child(
            parent,
            def(
                "PrepareKernelAction",
                "prepare-kernel",
                "convert the kernel for the boot method",
                Step::Nothing("the conversion is done by the child"),
            ),
            Some(blk),
        );
        if self.device.uboot.is_some() {
            let mut pk = parent.children.remove(i);
            self.child(
                &mut pk,
                def(
                    "UBootPrepareKernelAction",
                    "uboot-prepare-kernel",
                    "give the kernel a uImage header when the job asks for uimage",
                    Step::PrepareKernel,
                ),
                Some(blk),
            );
            parent.children.insert(i, pk);
        }
    }
}
