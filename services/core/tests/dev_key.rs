//! The embedded default's dev key on disk: created once with mode 0600, reused after, and
//! the same key for processes that start together.

use mesh_core::auth::{DEV_KEY_FILE, load_or_create_dev_key};

#[test]
fn the_dev_key_is_created_once_and_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = load_or_create_dev_key(&dir.path().join("data")).unwrap();
    let second = load_or_create_dev_key(&dir.path().join("data")).unwrap();
    assert_eq!(first.public_key_bytes(), second.public_key_bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data").join(DEV_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn creators_racing_on_a_fresh_data_dir_all_get_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys: Vec<[u8; 32]> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..8).map(|_| scope.spawn(|| load_or_create_dev_key(&data).unwrap().public_key_bytes())).collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    assert!(keys.windows(2).all(|pair| pair[0] == pair[1]), "different keys were handed out");
    let leftovers: Vec<_> = std::fs::read_dir(&data).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from(DEV_KEY_FILE)], "temporary files were left behind");
}
