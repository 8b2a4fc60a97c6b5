//! The Incus profile every sandbox uses besides `default` (`profiles/` in
//! the repository, embedded): created on the daemon when missing, replaced
//! when the embedded one changed (a hash of it is kept in the profile).

use crate::incus::{self, Client, Profile};

/// Its text.
const SANDBOX: &str = include_str!("../../profiles/cci-sandbox.json");

/// Its name.
pub const SANDBOX_PROFILE: &str = "cci-sandbox";

/// The key that records which version of the embedded profile is on the daemon.
const VERSION_KEY: &str = "user.cci.profile-hash";

/// The embedded profile, with its version mark.
pub fn wanted() -> Profile {
    use sha2::{Digest, Sha256};
    let mut p: Profile = serde_json::from_str(SANDBOX).unwrap_or_default();
    let hash: String = Sha256::digest(SANDBOX.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    p.config.insert(VERSION_KEY.into(), hash);
    p
}

/// Make sure the daemon has the current sandbox profile.
pub async fn ensure(client: &Client) -> incus::Result<()> {
    let want = wanted();
    match client.profile(SANDBOX_PROFILE).await {
        Ok((have, _)) if have.config.get(VERSION_KEY) == want.config.get(VERSION_KEY) => Ok(()),
        Ok((_, etag)) => match client.update_profile(&want, etag.as_deref()).await {
            // Another cci updated it meanwhile, or an instance that uses it
            // was busy (the daemon saved the profile all the same).
            Err(e) if e.is_conflict() || e.to_string().contains("profile change still saved") => {
                Ok(())
            }
            r => r,
        },
        Err(e) if e.is_not_found() => match client.create_profile(&want).await {
            Err(e) if e.is_conflict() => Ok(()),
            r => r,
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_profile_parses_and_carries_its_version() {
        let p = super::wanted();
        assert_eq!(p.name, super::SANDBOX_PROFILE);
        assert_eq!(p.config["limits.processes"], "4096");
        assert_eq!(p.config[super::VERSION_KEY].len(), 16);
    }
}
