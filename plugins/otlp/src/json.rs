//! OTLP/JSON: the proto3 JSON form of the same request (lowerCamelCase names, 64-bit integers as
//! strings or numbers), read into the protobuf structs.

use kiln_plugin_api::DecodeError;
use serde::{Deserialize, Deserializer};

use crate::proto;

/// An integer written as a JSON number or string.
fn int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(i64),
        Str(String),
    }
    let v = match N::deserialize(d)? {
        N::Num(n) => n,
        N::Str(s) => s.parse().map_err(serde::de::Error::custom)?,
    };
    T::try_from(v).map_err(|_| serde::de::Error::custom("integer out of range"))
}

fn ints<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    struct W<T: TryFrom<i64>>(#[serde(deserialize_with = "int")] T);
    Ok(Vec::<W<T>>::deserialize(d)?
        .into_iter()
        .map(|w| w.0)
        .collect())
}

// Mirrors of the protobuf messages in their JSON spelling; `conv` maps them across.
macro_rules! json_struct {
    ($name:ident => $proto:ident { $($field:ident : $ty:ty $(= $with:literal)? => $conv:expr),* $(,)? }) => {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase", default)]
        struct $name { $( $(#[serde(deserialize_with = $with)])? $field: $ty ),* }
        impl From<$name> for proto::$proto {
            fn from(v: $name) -> Self { Self { $( $field: $conv(v.$field) ),* } }
        }
    };
}

fn same<T>(v: T) -> T {
    v
}

fn each<A, B: From<A>>(v: Vec<A>) -> Vec<B> {
    v.into_iter().map(B::from).collect()
}

fn opt<A, B: From<A>>(v: Option<A>) -> Option<B> {
    v.map(B::from)
}

json_struct!(Request => ExportProfilesServiceRequest { resource_profiles: Vec<ResourceProfiles> => each, dictionary: Option<Dictionary> => opt });
json_struct!(Dictionary => ProfilesDictionary {
    location_table: Vec<Location> => each, function_table: Vec<Function> => each,
    string_table: Vec<String> => same, attribute_table: Vec<KeyValue> => each,
});
json_struct!(ResourceProfiles => ResourceProfiles { resource: Option<Resource> => opt, scope_profiles: Vec<ScopeProfiles> => each });
json_struct!(Resource => Resource { attributes: Vec<KeyValue> => each });
json_struct!(ScopeProfiles => ScopeProfiles { profiles: Vec<Profile> => each });
json_struct!(Profile => Profile {
    sample_type: Vec<ValueType> => each, sample: Vec<Sample> => each, location_indices: Vec<i32> = "ints" => same,
    time_nanos: i64 = "int" => same, duration_nanos: i64 = "int" => same, period_type: Option<ValueType> => opt,
    period: i64 = "int" => same,
});
json_struct!(ValueType => ValueType {
    type_strindex: i32 = "int" => same, unit_strindex: i32 = "int" => same, aggregation_temporality: i32 = "int" => same,
});
json_struct!(Sample => Sample {
    locations_start_index: i32 = "int" => same, locations_length: i32 = "int" => same,
    value: Vec<i64> = "ints" => same, attribute_indices: Vec<i32> = "ints" => same,
});
json_struct!(Location => Location { mapping_index: i32 = "int" => same, address: u64 = "int" => same, line: Vec<Line> => each });
json_struct!(Line => Line { function_index: i32 = "int" => same, line: i64 = "int" => same });
json_struct!(Function => Function {
    name_strindex: i32 = "int" => same, filename_strindex: i32 = "int" => same, start_line: i64 = "int" => same,
});
json_struct!(KeyValue => KeyValue { key: String => same, value: Option<AnyValue> => opt });
json_struct!(AnyValue => AnyValue { string_value: String => same, bool_value: bool => same, int_value: i64 = "int" => same });

/// Parses an OTLP/JSON `ExportProfilesServiceRequest`.
pub fn parse(body: &[u8]) -> Result<proto::ExportProfilesServiceRequest, DecodeError> {
    let req: Request = serde_json::from_slice(body).map_err(|e| {
        DecodeError::Malformed(format!(
            "not an OTLP/JSON ExportProfilesServiceRequest: {e}"
        ))
    })?;
    Ok(req.into())
}
