//! The catalog: databases, retention policies and the field types of every
//! measurement. Small, so it is kept in memory and persisted whole (one
//! rmp-serde value) on every change.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    FieldType, RetentionPolicyInfo, RetentionPolicySpec, RetentionPolicyUpdate, StorageError,
    DEFAULT_RP_NAME,
};

const HOUR: u64 = 3_600_000_000_000;
const DAY: u64 = 24 * HOUR;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CatalogState {
    pub next_database_id: u32,
    /// In creation order.
    pub databases: Vec<DatabaseMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseMeta {
    pub id: u32,
    pub name: String,
    pub default_rp: String,
    pub next_rp_id: u32,
    /// In creation order.
    pub rps: Vec<RpMeta>,
    pub measurements: BTreeMap<String, MeasurementMeta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpMeta {
    pub id: u32,
    pub name: String,
    /// Nanoseconds; 0 is infinite.
    pub duration: u64,
    pub shard_duration: u64,
    pub replication: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MeasurementMeta {
    /// The field id is the index.
    pub fields: Vec<(String, FieldType)>,
}

impl MeasurementMeta {
    pub fn field(&self, name: &str) -> Option<(u32, FieldType)> {
        self.fields
            .iter()
            .position(|(field, _)| field == name)
            .map(|index| (index as u32, self.fields[index].1))
    }
}

/// InfluxDB's shard group duration for a retention policy duration.
pub fn shard_duration_for(duration: u64) -> u64 {
    if duration == 0 {
        7 * DAY
    } else if duration < 2 * DAY {
        HOUR
    } else if duration < 180 * DAY {
        DAY
    } else {
        7 * DAY
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl RpMeta {
    pub fn info(&self, default: bool) -> RetentionPolicyInfo {
        RetentionPolicyInfo {
            name: self.name.clone(),
            duration: Duration::from_nanos(self.duration),
            shard_group_duration: Duration::from_nanos(self.shard_duration),
            replication: self.replication,
            default,
        }
    }

    fn from_spec(id: u32, spec: &RetentionPolicySpec) -> Result<RpMeta, StorageError> {
        let duration = spec.duration.map(nanos).unwrap_or(0);
        if duration != 0 && duration < HOUR {
            return Err(StorageError::Invalid(
                "retention policy duration must be at least 1h0m0s".into(),
            ));
        }
        let shard_duration = match spec.shard_group_duration.map(nanos) {
            Some(0) | None => shard_duration_for(duration),
            Some(value) => value,
        };
        if duration != 0 && shard_duration > duration {
            return Err(StorageError::Invalid(
                "retention policy duration must be greater than the shard duration".into(),
            ));
        }
        let replication = spec.replication.unwrap_or(1);
        if replication == 0 {
            return Err(StorageError::Invalid(
                "replication factor must be greater than 0".into(),
            ));
        }
        Ok(RpMeta {
            id,
            name: spec.name.clone(),
            duration,
            shard_duration,
            replication,
        })
    }

    fn same_settings(&self, other: &RpMeta) -> bool {
        self.duration == other.duration
            && self.shard_duration == other.shard_duration
            && self.replication == other.replication
    }
}

impl DatabaseMeta {
    pub fn rp(&self, name: &str) -> Option<&RpMeta> {
        self.rps.iter().find(|rp| rp.name == name)
    }
}

impl CatalogState {
    pub fn database(&self, name: &str) -> Option<&DatabaseMeta> {
        self.databases.iter().find(|db| db.name == name)
    }

    pub fn database_mut(&mut self, name: &str) -> Result<&mut DatabaseMeta, StorageError> {
        self.databases
            .iter_mut()
            .find(|db| db.name == name)
            .ok_or_else(|| StorageError::DatabaseNotFound(name.to_string()))
    }

    pub fn database_by_id(&self, id: u32) -> Option<&DatabaseMeta> {
        self.databases.iter().find(|db| db.id == id)
    }

    /// Returns whether anything changed.
    pub fn create_database(
        &mut self,
        name: &str,
        spec: Option<RetentionPolicySpec>,
    ) -> Result<bool, StorageError> {
        if name.is_empty() {
            return Err(StorageError::Invalid("database name required".into()));
        }
        let wanted = match &spec {
            Some(spec) => {
                let mut spec = spec.clone();
                if spec.name.is_empty() {
                    spec.name = DEFAULT_RP_NAME.to_string();
                }
                RpMeta::from_spec(0, &spec)?
            }
            None => RpMeta::from_spec(
                0,
                &RetentionPolicySpec {
                    name: DEFAULT_RP_NAME.into(),
                    ..Default::default()
                },
            )?,
        };
        if let Some(existing) = self.database(name) {
            // InfluxDB: idempotent, unless the requested RP conflicts.
            if spec.is_some() {
                let matches = existing.rp(&wanted.name).is_some_and(|rp| {
                    rp.same_settings(&wanted) && existing.default_rp == wanted.name
                });
                if !matches {
                    return Err(StorageError::Invalid(
                        "retention policy conflicts with an existing policy".into(),
                    ));
                }
            }
            return Ok(false);
        }
        let id = self.next_database_id;
        self.next_database_id += 1;
        let rp = RpMeta { id: 0, ..wanted };
        self.databases.push(DatabaseMeta {
            id,
            name: name.to_string(),
            default_rp: rp.name.clone(),
            next_rp_id: 1,
            rps: vec![rp],
            measurements: BTreeMap::new(),
        });
        Ok(true)
    }

    pub fn drop_database(&mut self, name: &str) -> Option<DatabaseMeta> {
        let index = self.databases.iter().position(|db| db.name == name)?;
        Some(self.databases.remove(index))
    }

    pub fn create_retention_policy(
        &mut self,
        db: &str,
        spec: RetentionPolicySpec,
        make_default: bool,
    ) -> Result<bool, StorageError> {
        let database = self.database_mut(db)?;
        if spec.name.is_empty() {
            return Err(StorageError::Invalid(
                "retention policy name required".into(),
            ));
        }
        let wanted = RpMeta::from_spec(database.next_rp_id, &spec)?;
        if let Some(existing) = database.rp(&spec.name) {
            let default_matches = !make_default || database.default_rp == spec.name;
            if existing.same_settings(&wanted) && default_matches {
                return Ok(false);
            }
            return Err(StorageError::Invalid(
                "retention policy already exists".into(),
            ));
        }
        database.next_rp_id += 1;
        database.rps.push(wanted);
        if make_default {
            database.default_rp = spec.name;
        }
        Ok(true)
    }

    pub fn alter_retention_policy(
        &mut self,
        db: &str,
        name: &str,
        update: RetentionPolicyUpdate,
    ) -> Result<(), StorageError> {
        let database = self.database_mut(db)?;
        let Some(rp) = database.rps.iter_mut().find(|rp| rp.name == name) else {
            return Err(StorageError::RetentionPolicyNotFound(name.to_string()));
        };
        let mut changed = rp.clone();
        if let Some(duration) = update.duration {
            changed.duration = nanos(duration);
            if changed.duration != 0 && changed.duration < HOUR {
                return Err(StorageError::Invalid(
                    "retention policy duration must be at least 1h0m0s".into(),
                ));
            }
        }
        if let Some(shard) = update.shard_group_duration {
            changed.shard_duration = match nanos(shard) {
                0 => shard_duration_for(changed.duration),
                value => value,
            };
        }
        if changed.duration != 0 && changed.shard_duration > changed.duration {
            return Err(StorageError::Invalid(
                "retention policy duration must be greater than the shard duration".into(),
            ));
        }
        if let Some(replication) = update.replication {
            if replication == 0 {
                return Err(StorageError::Invalid(
                    "replication factor must be greater than 0".into(),
                ));
            }
            changed.replication = replication;
        }
        *rp = changed;
        if update.make_default {
            database.default_rp = name.to_string();
        }
        Ok(())
    }

    /// Returns the dropped policy (None when it did not exist: InfluxDB succeeds).
    pub fn drop_retention_policy(
        &mut self,
        db: &str,
        name: &str,
    ) -> Result<Option<RpMeta>, StorageError> {
        let database = self.database_mut(db)?;
        let Some(index) = database.rps.iter().position(|rp| rp.name == name) else {
            return Ok(None);
        };
        Ok(Some(database.rps.remove(index)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_and_policy_rules() {
        let mut catalog = CatalogState::default();
        assert!(catalog.create_database("a", None).expect("create"));
        assert!(!catalog.create_database("a", None).expect("idempotent"));
        let db = catalog.database("a").expect("db");
        assert_eq!(db.default_rp, "autogen");
        assert_eq!(db.rps[0].shard_duration, 7 * DAY);
        let week = RetentionPolicySpec {
            name: "r1".into(),
            duration: Some(Duration::from_secs(7 * 86_400)),
            ..Default::default()
        };
        assert!(catalog
            .create_retention_policy("a", week.clone(), true)
            .expect("rp"));
        assert!(!catalog
            .create_retention_policy("a", week.clone(), true)
            .expect("same rp"));
        let eight = RetentionPolicySpec {
            duration: Some(Duration::from_secs(8 * 86_400)),
            ..week
        };
        assert_eq!(
            catalog
                .create_retention_policy("a", eight, false)
                .unwrap_err()
                .to_string(),
            "retention policy already exists"
        );
        let db = catalog.database("a").expect("db");
        assert_eq!(db.default_rp, "r1");
        assert_eq!(db.rp("r1").expect("r1").shard_duration, DAY);
        assert!(matches!(
            catalog.create_retention_policy("nope", RetentionPolicySpec::default(), false),
            Err(StorageError::DatabaseNotFound(_))
        ));
        assert!(catalog.drop_database("a").is_some());
        assert!(catalog.drop_database("a").is_none());
    }
}
