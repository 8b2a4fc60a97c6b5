//! Images against the real daemon: split import, aliases, publish and launch.

mod common;

use std::path::Path;
use std::process::Command;

use cci::incus::{FileWrite, ImageRef, InstanceCreate, Publish};
use common::{TestImage, TestInstance, client, unique_name};

/// Make `dir/metadata.tar` and `dir/rootfs.tar` for a tiny image whose
/// content is unique to `tag` (so a leftover from another run never collides).
fn tiny_split_image(dir: &Path, tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let meta = dir.join("meta");
    let root = dir.join("root");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::create_dir_all(root.join("rootfs/etc")).unwrap();
    let arch = String::from_utf8(Command::new("uname").arg("-m").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    std::fs::write(
        meta.join("metadata.yaml"),
        format!(
            "architecture: {arch}\ncreation_date: 1700000000\nproperties:\n  description: cci tiny test image {tag}\n  os: none\n"
        ),
    )
    .unwrap();
    std::fs::write(root.join("rootfs/etc/marker"), tag).unwrap();
    let tar = |src: &Path, out: &Path| {
        let ok = Command::new("tar")
            .arg("-C")
            .arg(src)
            .arg("-cf")
            .arg(out)
            .arg(".")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar failed");
    };
    let (m, r) = (dir.join("metadata.tar"), dir.join("rootfs.tar"));
    tar(&meta, &m);
    tar(&root.join("rootfs"), &r);
    (m, r)
}

#[tokio::test(flavor = "multi_thread")]
async fn import_a_split_image_and_manage_its_aliases() {
    let c = client().await;
    let tmp = tempfile::tempdir().unwrap();
    let tag = unique_name("img");
    let (meta, rootfs) = tiny_split_image(tmp.path(), &tag);

    let fingerprint = c.import_split_image(&meta, &rootfs).await.unwrap();
    let _guard = TestImage {
        fingerprint: fingerprint.clone(),
        client: c.clone(),
    };
    assert_eq!(fingerprint.len(), 64, "{fingerprint}");
    let image = c.image(&fingerprint).await.unwrap();
    assert_eq!(image.description(), format!("cci tiny test image {tag}"));
    assert!(
        c.images()
            .await
            .unwrap()
            .iter()
            .any(|i| i.fingerprint == fingerprint)
    );

    // Importing the same content again is a conflict, not a second image.
    let again = c.import_split_image(&meta, &rootfs).await.unwrap_err();
    assert!(
        again.is_conflict() || again.to_string().contains("exists"),
        "{again:?}"
    );

    // Alias create / get / update / set / delete.
    let alias = format!("{tag}-alias");
    c.create_image_alias(&alias, &fingerprint, "first")
        .await
        .unwrap();
    let got = c.image_alias(&alias).await.unwrap();
    assert_eq!(
        (got.target.as_str(), got.description.as_str()),
        (fingerprint.as_str(), "first")
    );
    let dup = c
        .create_image_alias(&alias, &fingerprint, "x")
        .await
        .unwrap_err();
    assert!(dup.is_conflict(), "{dup:?}");
    c.update_image_alias(&alias, &fingerprint, "second")
        .await
        .unwrap();
    assert_eq!(c.image_alias(&alias).await.unwrap().description, "second");
    c.set_image_alias(&alias, &fingerprint, "third")
        .await
        .unwrap();
    assert_eq!(c.image_alias(&alias).await.unwrap().description, "third");
    let listed = c.image(&fingerprint).await.unwrap();
    assert!(listed.aliases.iter().any(|a| a.name == alias));
    c.delete_image_alias(&alias).await.unwrap();
    assert!(c.image_alias(&alias).await.unwrap_err().is_not_found());

    // Missing things are typed not-found errors.
    assert!(c.image(&"0".repeat(64)).await.unwrap_err().is_not_found());
    assert!(
        c.delete_image_alias(&alias)
            .await
            .unwrap_err()
            .is_not_found()
    );

    c.delete_image(&fingerprint).await.unwrap();
    assert!(c.image(&fingerprint).await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_an_instance_and_launch_from_the_image() {
    let c = client().await;
    let src = TestInstance::running("pub").await;
    let marker = format!("published from {}", src.name);
    c.write_file(
        &src.name,
        "/etc/cci-marker",
        marker.clone(),
        FileWrite::mode(0o644),
    )
    .await
    .unwrap();
    c.stop_instance(&src.name, Some(std::time::Duration::from_secs(5)), true)
        .await
        .unwrap();

    let alias = unique_name("published");
    let mut publish = Publish {
        aliases: vec![alias.clone()],
        compression: Some("none".into()),
        ..Default::default()
    };
    publish
        .properties
        .insert("description".into(), "cci publish test".into());
    let fingerprint = c.publish_instance(&src.name, &publish).await.unwrap();
    let _image = TestImage {
        fingerprint: fingerprint.clone(),
        client: c.clone(),
    };
    assert_eq!(c.image_alias(&alias).await.unwrap().target, fingerprint);
    assert_eq!(
        c.image(&fingerprint).await.unwrap().description(),
        "cci publish test"
    );

    let name = unique_name("frompub");
    let _launched = TestInstance {
        name: name.clone(),
        client: c.clone(),
    };
    let mut spec = InstanceCreate::container(&name, &ImageRef::Alias(alias.clone()));
    spec.start = true;
    c.create_instance(&spec).await.unwrap();
    let (_, body) = c.read_file(&name, "/etc/cci-marker").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&body), marker);
}
