//! A document stored with a job: its spec, report, summary, result or checkpoint, held as the
//! JSON text the database has. Only the code of the job's kind reads it, into its own type;
//! nothing on the way looks inside.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

#[derive(Debug, Clone)]
pub struct Document(Box<RawValue>);

impl Document {
    /// The document of a value (a spec, report or result: plain data with string keys).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Self {
        Self(serde_json::value::to_raw_value(value).expect("stored documents are plain data"))
    }

    /// Text read back from the database, checked to be JSON.
    pub(super) fn stored(text: String) -> serde_json::Result<Self> {
        RawValue::from_string(text).map(Self)
    }

    pub fn read<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }

    pub fn text(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Document {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}
