//! Image builds through the engine's build API (the classic builder, as `DOCKER_BUILDKIT=0`
//! would pick: no session, no registry), and the image tags a build leaves: its own
//! temporary tag, the final tag put on afterwards, and removing either.

use bollard::query_parameters::{BuildImageOptions, BuilderVersion, RemoveImageOptions, TagImageOptions};
use futures_util::StreamExt;

use super::{split_image, Runtime, RuntimeError};

/// What a build is given.
pub struct BuildParams {
    /// The checked context as a plain tar.
    pub context: bytes::Bytes,
    /// The Dockerfile's path inside it.
    pub dockerfile: String,
    /// The tag the result gets from the engine.
    pub tag: String,
    /// Whether build steps may reach the network (else network mode `none`).
    pub network: bool,
}

impl Runtime {
    /// Builds an image, handing each line of output to `line` as it arrives. `Err` holds
    /// the engine's reason when the build failed (a step failed, the Dockerfile is wrong,
    /// the engine went away). Dropping the future closes the connection, which makes the
    /// engine stop the build and remove its intermediate containers (`forcerm`).
    pub async fn build_image(&self, p: BuildParams, mut line: impl FnMut(&str) + Send) -> Result<(), String> {
        let d = self.client().await.map_err(|e| e.to_string())?;
        let memory = crate::config::parse_size(&self.cfg.build.memory).unwrap_or(1 << 30).min(i32::MAX as u64) as i32;
        let period = 100_000;
        let opts = BuildImageOptions {
            dockerfile: p.dockerfile,
            t: Some(p.tag),
            rm: true,
            forcerm: true,
            memory: Some(memory),
            memswap: Some(memory),
            cpuperiod: Some(period),
            cpuquota: Some((self.cfg.build.cpus * period as f64).round().max(1000.0) as i32),
            // No network unless the manifest asks for the internet; else the engine's default.
            networkmode: (!p.network).then(|| "none".to_string()),
            version: BuilderVersion::BuilderV1,
            ..Default::default()
        };
        let mut stream = d.build_image(opts, None, Some(bollard::body_full(p.context)));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    for text in [info.stream, info.status].into_iter().flatten() {
                        for l in text.lines() {
                            line(l);
                        }
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => return Err(error),
                Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => return Err(message),
                Err(e) => return Err(self.map_err(e).to_string()),
            }
        }
        Ok(())
    }

    /// Puts the tag `image` (`repo:tag`) on an image (by id or reference), moving it from
    /// whatever image had it: the engine does that in one step.
    pub async fn tag_image(&self, source: &str, image: &str) -> Result<(), RuntimeError> {
        let d = self.client().await?;
        let (repo, tag) = split_image(image);
        d.tag_image(source, Some(TagImageOptions { repo: Some(repo), tag: Some(tag) })).await.map_err(|e| self.map_err(e))
    }

    /// Removes a tag (the image goes too when nothing else names it and no container uses
    /// it); a missing tag counts as removed.
    pub async fn untag_image(&self, image: &str) -> Result<(), RuntimeError> {
        let d = self.client().await?;
        match d.remove_image(image, Some(RemoveImageOptions { force: false, noprune: false, platforms: None }), None).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(Self::status_of(&e), Some(404) | Some(409)) => Ok(()),
            Err(e) => Err(self.map_err(e)),
        }
    }
}
