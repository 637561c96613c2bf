//! cairn's own settings: their keys, types, defaults and limits. Applications define their
//! own beside them (`Store::define_setting`); these are always there.

use serde_json::Value;

use crate::data::settings::{SettingDef, SettingType};

/// Largest record body accepted, in bytes of canonical JSON (an integer).
pub const RECORDS_MAX_BODY_BYTES: &str = "records.max_body_bytes";
/// Record bodies of at least this many bytes are stored compressed when that pays.
pub const RECORDS_COMPRESS_MIN_BYTES: &str = "records.compress_min_bytes";
/// In a collection with a trained dictionary, bodies of at least this many bytes use it.
pub const RECORDS_DICT_MIN_BYTES: &str = "records.dict_min_bytes";
/// Backup rotation always keeps the newest this many verified backups.
pub const BACKUP_KEEP_LAST: &str = "backup.keep_last";
/// Rotation also keeps the newest backup of each of the last this many days.
pub const BACKUP_KEEP_DAILY: &str = "backup.keep_daily";
/// Rotation also keeps the newest backup of each of the last this many weeks.
pub const BACKUP_KEEP_WEEKLY: &str = "backup.keep_weekly";
/// With automatic backups: opening takes one when the newest is older than this (seconds).
pub const BACKUP_ON_OPEN_AFTER_SECONDS: &str = "backup.on_open_after_seconds";
/// With automatic backups: a process holding the store takes one this often (seconds).
pub const BACKUP_INTERVAL_SECONDS: &str = "backup.interval_seconds";
/// With automatic backups: a clean close takes one.
pub const BACKUP_ON_CLOSE: &str = "backup.on_close";
/// Largest attachment accepted, in bytes.
pub const BLOBS_MAX_BYTES: &str = "blobs.max_bytes";
/// Seconds an attachment nothing links to is kept before blob collection may remove it.
pub const BLOBS_GC_GRACE_SECONDS: &str = "blobs.gc_grace_seconds";
/// Bytes kept in reserve and given up when the disk is full, so that space can be freed.
pub const STORAGE_RESERVE_BYTES: &str = "storage.reserve_bytes";

/// cairn's own settings.
pub fn builtin_settings() -> Vec<SettingDef> {
    vec![
        SettingDef {
            key: RECORDS_MAX_BODY_BYTES.into(),
            kind: SettingType::Integer,
            default: Value::from(1024 * 1024),
            description: "Largest record body accepted, in bytes of canonical JSON".into(),
            min: Some(256.0),
            max: Some(256.0 * 1024.0 * 1024.0),
            choices: None,
        },
        SettingDef {
            key: RECORDS_COMPRESS_MIN_BYTES.into(),
            kind: SettingType::Integer,
            default: Value::from(4096),
            description: "Record bodies of at least this many bytes are stored zstd-compressed when that saves an eighth"
                .into(),
            min: Some(64.0),
            max: None,
            choices: None,
        },
        SettingDef {
            key: RECORDS_DICT_MIN_BYTES.into(),
            kind: SettingType::Integer,
            default: Value::from(128),
            description: "In a collection with a trained dictionary, bodies of at least this many bytes are compressed with it"
                .into(),
            min: Some(16.0),
            max: None,
            choices: None,
        },
        int_setting(BACKUP_KEEP_LAST, 10, 1.0, "Verified backups rotation always keeps: the newest this many"),
        int_setting(BACKUP_KEEP_DAILY, 7, 0.0, "Rotation also keeps the newest backup of each of the last this many days"),
        int_setting(BACKUP_KEEP_WEEKLY, 4, 0.0, "Rotation also keeps the newest backup of each of the last this many weeks"),
        int_setting(
            BACKUP_ON_OPEN_AFTER_SECONDS,
            86_400,
            0.0,
            "With automatic backups, opening the store takes one when the newest is older than this (0: never)",
        ),
        int_setting(
            BACKUP_INTERVAL_SECONDS,
            0,
            0.0,
            "With automatic backups, a process holding the store takes one this often (0: never)",
        ),
        SettingDef {
            key: BACKUP_ON_CLOSE.into(),
            kind: SettingType::Bool,
            default: Value::from(false),
            description: "With automatic backups, closing the store cleanly takes one".into(),
            min: None,
            max: None,
            choices: None,
        },
        SettingDef {
            key: BLOBS_MAX_BYTES.into(),
            kind: SettingType::Integer,
            default: Value::from(16_i64 << 30),
            description: "Largest attachment accepted, in bytes".into(),
            min: Some(1.0),
            max: None,
            choices: None,
        },
        SettingDef {
            key: STORAGE_RESERVE_BYTES.into(),
            kind: SettingType::Integer,
            default: Value::from(8_i64 << 20),
            description: "Bytes kept in reserve (cairn.reserve) and given up when the disk is full, so that deletes, purges and blob gc can still free space (0: none)".into(),
            min: Some(0.0),
            max: None,
            choices: None,
        },
        SettingDef {
            key: BLOBS_GC_GRACE_SECONDS.into(),
            kind: SettingType::Integer,
            default: Value::from(7 * 24 * 3600),
            description: "Seconds an attachment nothing links to is kept before blob collection may remove it".into(),
            min: Some(0.0),
            max: None,
            choices: None,
        },
    ]
}

fn int_setting(key: &str, default: i64, min: f64, description: &str) -> SettingDef {
    SettingDef {
        key: key.into(),
        kind: SettingType::Integer,
        default: Value::from(default),
        description: description.into(),
        min: Some(min),
        max: None,
        choices: None,
    }
}
