//! Images a deployment records and the clean-up of built ones: which image id a reference
//! names now (a rollback runs exactly that id again), and the `addond/…` images the builds
//! made, which only the clean-up removes — never an image someone else put on the host.

use std::collections::HashMap;

use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};

use super::{Runtime, RuntimeError};

/// The repository prefix of images addond builds; the only ones it ever removes.
pub const BUILT_PREFIX: &str = "addond/";

impl Runtime {
    /// The id (`sha256:…`) of the image `reference` names now; `None` when absent.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, RuntimeError> {
        let d = self.client().await?;
        self.within(async {
            match d.inspect_image(reference).await {
                Ok(i) => Ok(i.id),
                Err(e) if Self::status_of(&e) == Some(404) => Ok(None),
                Err(e) => Err(self.map_err(e)),
            }
        })
        .await
    }

    /// Every tag under [`BUILT_PREFIX`] with its image id.
    pub async fn built_images(&self) -> Result<Vec<(String, String)>, RuntimeError> {
        let d = self.client().await?;
        let filters = HashMap::from([("reference".to_string(), vec![format!("{BUILT_PREFIX}*")])]);
        let list = self
            .within(async {
                d.list_images(Some(ListImagesOptions { filters: Some(filters), ..Default::default() })).await.map_err(|e| self.map_err(e))
            })
            .await?;
        Ok(list
            .into_iter()
            .flat_map(|i| {
                let id = i.id;
                i.repo_tags.into_iter().filter(|t| t.starts_with(BUILT_PREFIX)).map(move |t| (t, id.clone()))
            })
            .collect())
    }

    /// Removes one built tag (the image goes with its last tag, unless a container uses it,
    /// which Docker refuses: that is kept and logged). Anything not built by addond is refused.
    pub async fn remove_built_image(&self, tag: &str) -> Result<bool, RuntimeError> {
        if !tag.starts_with(BUILT_PREFIX) {
            return Ok(false);
        }
        let d = self.client().await?;
        self.within(async {
            match d.remove_image(tag, Some(RemoveImageOptions { force: false, noprune: false, ..Default::default() }), None).await {
                Ok(_) => Ok(true),
                Err(e) if matches!(Self::status_of(&e), Some(404 | 409)) => Ok(false),
                Err(e) => Err(self.map_err(e)),
            }
        })
        .await
    }
}
