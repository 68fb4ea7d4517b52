//! The state directory and the API token in it: 32 random bytes, base64url, in a file
//! only its owner can read, created once and reused across restarts.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// Why the state directory or the token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot use the state directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read or write the token file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the token file {path} can be read by others (mode {mode:o}); run `chmod 600 {path}` or pass --rotate-token"
    )]
    Exposed { path: String, mode: u32 },
    #[error("the token file {path} holds no valid token; pass --rotate-token to write a new one")]
    Invalid { path: String },
}

/// The state directory, created 0700 when missing and made 0700 when it was not (its
/// files hold the API token and the manifests' members).
pub fn state_dir(path: &Path) -> Result<PathBuf, TokenError> {
    let dir_err = |source| TokenError::Dir {
        path: path.display().to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(dir_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path.join("launches"))
        .map_err(dir_err)?;
    Ok(path.to_path_buf())
}

/// A fresh token: 32 random bytes from the operating system, base64url.
pub fn fresh() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system gives random bytes");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The token in `dir/token`: the one there, or a new one when there is none or
/// `rotate` asks for a new one. The file is created 0600 and never overwritten in
/// place: a rotation writes a new file and renames it over the old one.
pub fn load_or_create(dir: &Path, rotate: bool) -> Result<String, TokenError> {
    let path = dir.join("token");
    let file_err = |source| TokenError::File {
        path: path.display().to_string(),
        source,
    };
    if !rotate {
        match std::fs::read_to_string(&path) {
            Ok(text) => return existing(&path, text.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err(e)),
        }
    }
    let token = fresh();
    write(dir, &token)?;
    Ok(token)
}

/// Writes `token` to `dir/token` (0600, through a new file renamed over the old one).
pub fn write(dir: &Path, token: &str) -> Result<(), TokenError> {
    let path = dir.join("token");
    let file_err = |source| TokenError::File {
        path: path.display().to_string(),
        source,
    };
    let tmp = dir.join(format!("token.{}.new", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_err)?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(file_err)?;
    std::fs::rename(&tmp, &path).map_err(file_err)
}

fn existing(path: &Path, token: &str) -> Result<String, TokenError> {
    let mode = std::fs::metadata(path)
        .map_err(|source| TokenError::File {
            path: path.display().to_string(),
            source,
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.display().to_string(),
            mode,
        });
    }
    let valid = token.len() >= 32
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(TokenError::Invalid {
            path: path.display().to_string(),
        });
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_state_dir_is_closed_and_what_is_kept_in_it_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve");
        std::fs::create_dir_all(path.join("launches")).unwrap();
        for p in [&path, &path.join("launches")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let state = state_dir(&path).unwrap();
        assert_eq!(mode(&state), 0o700);
        let record = state.join("launches/bl-1.json");
        super::super::store::write_atomic(&record, b"{}").unwrap();
        assert_eq!(mode(&record), 0o600);
    }

    #[test]
    fn a_token_is_created_0600_then_reused_until_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_dir(&dir.path().join("serve")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        let first = load_or_create(&state, false).unwrap();
        assert_eq!(first.len(), 43, "32 bytes in base64url without padding");
        assert_eq!(mode(&state.join("token")), 0o600);
        assert_eq!(load_or_create(&state, false).unwrap(), first);
        let rotated = load_or_create(&state, true).unwrap();
        assert_ne!(rotated, first);
        assert_eq!(load_or_create(&state, false).unwrap(), rotated);
        assert_eq!(mode(&state.join("token")), 0o600);
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), false).unwrap();
        let path = dir.path().join("token");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(dir.path(), false).unwrap_err();
        assert!(matches!(err, TokenError::Exposed { .. }), "{err}");
        std::fs::write(&path, "short\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load_or_create(dir.path(), false),
            Err(TokenError::Invalid { .. })
        ));
    }
}
