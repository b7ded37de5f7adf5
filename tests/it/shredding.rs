//! Crypto-shredding, checked on the raw bytes of every file a stopped
//! server left and of a backup taken before the erasure: nothing of the
//! erased person is readable, and a bystander is readable only through
//! the store's own keys.

use std::path::{Path, PathBuf};

use sightline::api::pb::{
    self, admin_service_client::AdminServiceClient, erase_subject_request, export_subject_request,
    privacy_service_client::PrivacyServiceClient, segment_service_client::SegmentServiceClient,
};
use sightline::identity::MergeRules;
use sightline::store::{PrivacySource, SledStore};

use crate::support::*;

/// One person's values, each written through the API and searched for on
/// disk in the form the store keeps (identifiers normalized).
struct Person {
    email: &'static str,
    phone: &'static str,
    /// The phone as normalized (E.164), as the index would hold it.
    phone_stored: &'static str,
    first_name: &'static str,
    last_name: &'static str,
    street: &'static str,
    product: &'static str,
    note: &'static str,
}

const ERASED: Person = Person {
    email: "ottoline.wrexham@example.org",
    phone: "07911 123461",
    phone_stored: "+447911123461",
    first_name: "Ottoline",
    last_name: "Wrexhamby",
    street: "41 Quenby Crescent",
    product: "Saffron Lantern Teapot",
    note: "leave behind the lilac gate",
};

const BYSTANDER: Person = Person {
    email: "barnaby.pellow@example.net",
    phone: "07911 123872",
    phone_stored: "+447911123872",
    first_name: "Barnaby",
    last_name: "Pellowfield",
    street: "9 Kestrel Mews",
    product: "Juniper Copper Kettle",
    note: "ring the brass bell twice",
};

impl Person {
    fn needles(&self) -> [&'static str; 8] {
        [
            self.email,
            self.phone_stored,
            // The national digits, in case any copy dropped the prefix.
            &self.phone_stored[3..],
            self.first_name,
            self.last_name,
            self.street,
            self.product,
            self.note,
        ]
    }
}

fn object(pairs: &[(&str, prost_types::Value)]) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
            fields: pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.clone()))
                .collect(),
        })),
    }
}

async fn write(client: &mut Client, person: &Person, message: &str) -> String {
    let mut call = identify(vec![email(person.email), phone(person.phone)]);
    call.traits = traits(&[
        ("first_name", text(person.first_name)),
        ("last_name", text(person.last_name)),
        (
            "address",
            object(&[
                ("street", text(person.street)),
                ("postal_code", text("SW1A 1AA")),
            ]),
        ),
    ]);
    call.message_id = format!("crm-{message}");
    let profile_id = client.identify(call).await.unwrap().into_inner().profile_id;
    let mut order = track(vec![email(person.email)], "Order Completed");
    order.message_id = format!("order-{message}");
    order.properties = Some(prost_types::Struct {
        fields: [
            ("revenue".to_owned(), number(42.0)),
            (
                "products".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::ListValue(
                        prost_types::ListValue {
                            values: vec![object(&[
                                ("product_id", text(&format!("sku-{message}"))),
                                ("name", text(person.product)),
                            ])],
                        },
                    )),
                },
            ),
            ("notes".to_owned(), text(person.note)),
        ]
        .into_iter()
        .collect(),
    });
    client.track(order).await.unwrap();
    profile_id
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[derive(Debug, Default)]
struct Scan {
    files: usize,
    bytes: usize,
    hits: Vec<String>,
}

/// Searches raw bytes (files, and on PostgreSQL the stored rows) for each
/// needle.
fn scan(blobs: &[(String, Vec<u8>)], needles: &[&str]) -> Scan {
    let mut scan = Scan::default();
    for (name, bytes) in blobs {
        scan.files += 1;
        scan.bytes += bytes.len();
        for needle in needles {
            let needle = needle.as_bytes();
            if bytes.windows(needle.len()).any(|window| window == needle) {
                scan.hits
                    .push(format!("{} in {name}", String::from_utf8_lossy(needle)));
            }
        }
    }
    scan
}

fn raw_bytes(data_dir: &Path, backup: &Path) -> Vec<(String, Vec<u8>)> {
    let mut blobs: Vec<(String, Vec<u8>)> = files_under(data_dir)
        .into_iter()
        .chain(files_under(backup))
        .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
        .collect();
    if database_url(data_dir).is_some() {
        for (key, value) in stored_pairs(data_dir) {
            blobs.push(("a database row".to_owned(), [key, value].concat()));
        }
    }
    blobs
}

#[tokio::test]
async fn an_erased_person_is_unreadable_in_every_file_and_in_an_earlier_backup() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    SegmentServiceClient::new(server.channel().await)
        .put_segment(pb::PutSegmentRequest {
            segment: Some(pb::Segment {
                id: "buyers".to_owned(),
                name: "buyers".to_owned(),
                rule: "profile.computed.frequency >= 1".to_owned(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let erased_id = write(&mut client, &ERASED, "erased").await;
    let bystander_id = write(&mut client, &BYSTANDER, "bystander").await;
    get_by(&mut client, email(ERASED.email)).await.unwrap();

    let backups = tempfile::tempdir().unwrap();
    let before = backups.path().join("before");
    AdminServiceClient::new(server.channel().await)
        .backup(pb::BackupRequest {
            directory: before.display().to_string(),
        })
        .await
        .unwrap();
    PrivacyServiceClient::new(server.channel().await)
        .erase_subject(pb::EraseSubjectRequest {
            lookup: Some(erase_subject_request::Lookup::Identifier(email(
                ERASED.email,
            ))),
            request_id: "shred-1".to_owned(),
            requester: "compliance".to_owned(),
            reason: "Art. 17 request".to_owned(),
            skip_suppression: false,
        })
        .await
        .unwrap();
    let data_dir = server.stop().await;

    let blobs = raw_bytes(data_dir.path(), &before);
    let erased = scan(&blobs, &ERASED.needles());
    let bystander = scan(&blobs, &BYSTANDER.needles());
    eprintln!(
        "raw scan: {} files, {} bytes; erased person: {} hits; bystander in plain bytes: {} hits",
        erased.files,
        erased.bytes,
        erased.hits.len(),
        bystander.hits.len()
    );
    assert!(erased.files >= 2 && erased.bytes > 0);
    assert!(erased.hits.is_empty(), "{:#?}", erased.hits);
    assert!(bystander.hits.is_empty(), "{:#?}", bystander.hits);

    // The same scan finds every value of the bystander once the store's own
    // code opens the data with its keys, so it is searching the right place.
    let opened: Vec<(String, Vec<u8>)> = opened_pairs(data_dir.path())
        .into_iter()
        .map(|(key, value)| ("an opened record".to_owned(), [key, value].concat()))
        .collect();
    let readable = scan(&opened, &BYSTANDER.needles());
    let found = BYSTANDER
        .needles()
        .iter()
        .filter(|needle| readable.hits.iter().any(|hit| hit.starts_with(*needle)))
        .count();
    eprintln!(
        "after opening: bystander {found} of {} values found",
        BYSTANDER.needles().len()
    );
    for needle in &BYSTANDER.needles() {
        assert!(
            readable.hits.iter().any(|hit| hit.starts_with(needle)),
            "{needle} not found after opening: {:#?}",
            readable.hits
        );
    }
    assert!(scan(&opened, &ERASED.needles()).hits.is_empty());

    // The earlier backup, restored against the key store as it is now,
    // brings back everyone but the erased person.
    let restored_home = tempfile::tempdir().unwrap();
    let restored = restored_home.path().join("data");
    let mut config = test_config(&restored_home);
    config.data_dir = restored.clone();
    config.storage.url = database_url(&restored);
    let rules = MergeRules::new(&config.identity.merge, &config.identity.fuzzy);
    let options = sightline::server::store_options(&config, rules).unwrap();
    let keys = match database_url(data_dir.path()) {
        Some(url) => sightline::server::privacy_source(&config, url),
        None => PrivacySource::Directory(data_dir.path().to_owned()),
    };
    SledStore::restore(&before, &options, None, Some(&keys)).unwrap();
    let server = TestServer::start_with(restored_home, config).await;
    let mut client = server.client().await;
    for lookup in [email(ERASED.email), phone(ERASED.phone)] {
        let status = get_by(&mut client, lookup).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
    let status = get_by_id(&mut client, &erased_id).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let kept = get_by_id(&mut client, &bystander_id).await.unwrap();
    assert!(identifier_values(&kept).contains(&format!("email:{}", BYSTANDER.email)));

    let mut members = SegmentServiceClient::new(server.channel().await)
        .list_members(pb::ListMembersRequest {
            segment_id: "buyers".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut listed = Vec::new();
    while let Some(member) = members.message().await.unwrap() {
        listed.push(member.profile_id);
    }
    assert_eq!(listed, vec![bystander_id.clone()]);

    let export = PrivacyServiceClient::new(server.channel().await)
        .export_subject(pb::ExportSubjectRequest {
            lookup: Some(export_subject_request::Lookup::Identifier(email(
                ERASED.email,
            ))),
            requester: "data-team".to_owned(),
            ..Default::default()
        })
        .await;
    let status = match export {
        Err(status) => status,
        Ok(stream) => stream.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), tonic::Code::NotFound);

    let again = client
        .identify(identify(vec![email(ERASED.email)]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        again.suppressed,
        "a later identify of the erased email is suppressed"
    );
    server.stop().await;
}

fn options_for(
    data_dir: &Path,
    master_key_file: Option<PathBuf>,
) -> sightline::store::SledStoreOptions {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = test_config(&scratch);
    config.data_dir = data_dir.to_owned();
    config.storage.url = database_url(data_dir);
    config.privacy.master_key_file = master_key_file;
    let rules = MergeRules::new(&config.identity.merge, &config.identity.fuzzy);
    sightline::server::store_options(&config, rules).unwrap()
}

fn open_error(options: &sightline::store::SledStoreOptions) -> String {
    match SledStore::open(options) {
        Ok(store) => {
            sightline::store::ProfileStore::close(&store).unwrap();
            panic!("the store opened")
        }
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn master_keys_are_checked_rotated_and_a_damaged_key_fails_one_person() {
    let server = TestServer::start().await;
    if database_url(Path::new("/")).is_some() {
        // The key store is rows of the database there; the file checks
        // below are the embedded engine's.
        server.stop().await;
        return;
    }
    let mut client = server.client().await;
    let damaged_id = write(&mut client, &ERASED, "a").await;
    let kept_id = write(&mut client, &BYSTANDER, "b").await;
    let data_dir = server.stop().await;
    let keys_file = data_dir.path().join(sightline::store::KEY_STORE_FILE);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data_dir.path().join("master.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the generated master key is private");

    let other = data_dir.path().join("other.key");
    std::fs::write(
        &other,
        sightline::store::sealing::cipher::SecretKey::random().to_hex(),
    )
    .unwrap();
    let wrong = open_error(&options_for(data_dir.path(), Some(other.clone())));
    assert!(wrong.contains("master key does not open"), "{wrong}");

    let generated = data_dir.path().join("master.key");
    let kept_aside = data_dir.path().join("kept-aside.key");
    std::fs::rename(&generated, &kept_aside).unwrap();
    let missing = open_error(&options_for(data_dir.path(), None));
    assert!(missing.contains("no master key was given"), "{missing}");
    assert!(!generated.exists(), "no new key is made over existing data");

    // Rotation re-seals the key store under the new key; the old one no
    // longer opens it.
    let rotated = SledStore::rotate_master_key(
        &options_for(data_dir.path(), Some(kept_aside.clone())),
        &sightline::store::sealing::master::MasterKeySource::File(other.clone())
            .load(true)
            .unwrap(),
    )
    .unwrap();
    assert!(rotated >= 2, "{rotated}");
    let old = open_error(&options_for(data_dir.path(), Some(kept_aside)));
    assert!(old.contains("master key does not open"), "{old}");

    // One damaged slot: that person's reads fail, everyone else's work.
    let number: u64 = damaged_id[1..].parse().unwrap();
    let mut bytes = std::fs::read(&keys_file).unwrap();
    bytes[128 + number as usize * 64 + 20] ^= 0xff;
    std::fs::write(&keys_file, bytes).unwrap();
    let mut config = test_config(&data_dir);
    config.privacy.master_key_file = Some(other);
    let server = TestServer::start_with(data_dir, config).await;
    let mut client = server.client().await;
    let status = get_by_id(&mut client, &damaged_id).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
    assert!(
        status.message().contains("data key"),
        "the status says what is wrong: {status:?}"
    );
    assert!(!status.message().contains(ERASED.email));
    get_by_id(&mut client, &kept_id).await.unwrap();
    server.stop().await;
}
