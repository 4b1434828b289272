//! What can go wrong talking to ClickHouse.

use kiln_plugin_api::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// No answer: connection refused, DNS, timeout, TLS.
    #[error("ClickHouse at {url} is unreachable: {why}")]
    Unreachable { url: String, why: String },
    /// The server refused the user or password.
    #[error("ClickHouse refused the credentials of user `{user}`: {message}")]
    Credentials { user: String, message: String },
    /// The server answered with an error.
    #[error("ClickHouse error {code}: {message}")]
    Server { code: u32, message: String },
    /// The answer is not what was asked for.
    #[error("ClickHouse answered something unexpected: {0}")]
    Decode(String),
    /// The database holds a schema this version of Kiln does not know.
    #[error("the ClickHouse database `{database}` has schema version {found}, newer than the {known} this kiln knows: upgrade kiln (or point it at another database)")]
    NewerSchema {
        database: String,
        found: u32,
        known: u32,
    },
    /// Another daemon claimed the upgrade of the schema and has not finished it.
    #[error("the ClickHouse database `{database}` is being upgraded to this kiln's schema by another daemon, which has not finished: wait for it; if no daemon is upgrading it (one stopped half way), run `DROP TABLE IF EXISTS {database}.buckets` and `DROP TABLE {database}.upgrade_to_2`, then start kiln again")]
    UpgradeStuck { database: String },
}

impl From<ClickHouseError> for StorageError {
    fn from(e: ClickHouseError) -> Self {
        match e {
            e @ (ClickHouseError::Unreachable { .. } | ClickHouseError::Credentials { .. }) => {
                StorageError::unavailable(e.to_string())
            }
            e @ ClickHouseError::Decode(_) => StorageError::Corrupt(e.to_string()),
            e => StorageError::Io(e.to_string()),
        }
    }
}
