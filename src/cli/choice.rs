//! Command-line values for the library's enums, spelled as in configuration files.
//!
//! The library's enums know nothing of the terminal: each lists its variants
//! ([`strum::VariantArray`]), documents them ([`strum::EnumMessage`]) and names them through
//! serde, as config files spell them. [`choice`] turns that into a clap parser, so a value reads
//! the same on the command line and in a TOML file, and `--help` lists every variant with its
//! doc comment. Both `-` and `_` are accepted between words (`vit-b` and `vit_b`).

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use serde::Serialize;
use strum::{EnumMessage, VariantArray};

/// The serde name of a unit variant (its spelling in config files).
pub fn name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        // Every enum given to `choice` is a unit-variant enum, which serde names by a string.
        other => format!("{other:?}"),
    }
}

/// The serde name of an enum's default: clap's `default_value`, so that the default stays where
/// the library defines it.
pub fn default_name<T: Default + Serialize>() -> String {
    name(&T::default())
}

/// A clap value parser for a library enum: its variants' serde names, each with the other
/// word separator as an alias, and their doc comments as help.
pub fn choice<T>() -> impl TypedValueParser<Value = T>
where
    T: VariantArray + EnumMessage + Serialize + Clone + Send + Sync + 'static,
{
    let values = T::VARIANTS.iter().map(|v| {
        let n = name(v);
        let mut value = PossibleValue::new(n.clone());
        for alias in [n.replace('_', "-"), n.replace('-', "_")] {
            if alias != n {
                value = value.alias(alias);
            }
        }
        match v.get_documentation() {
            Some(doc) => value.help(doc.trim().to_string()),
            None => value,
        }
    });
    PossibleValuesParser::new(values).try_map(|s: String| {
        let normal = |t: &str| t.replace('_', "-");
        T::VARIANTS
            .iter()
            .find(|v| normal(&name(*v)) == normal(&s))
            .cloned()
            .ok_or_else(|| format!("`{s}` is not one of the possible values"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wesam::model::ModelType;

    fn parse<T>(s: &str) -> Result<T, clap::Error>
    where
        T: VariantArray + EnumMessage + Serialize + Clone + Send + Sync + 'static,
    {
        let cmd = clap::Command::new("t");
        let arg = clap::Arg::new("v");
        choice::<T>().parse_ref(&cmd, Some(&arg), std::ffi::OsStr::new(s))
    }

    #[test]
    fn values_parse_with_either_separator_and_others_are_refused() {
        assert_eq!(parse::<ModelType>("vit_b").unwrap(), ModelType::VitB);
        assert_eq!(parse::<ModelType>("vit-l").unwrap(), ModelType::VitL);
        assert!(parse::<ModelType>("vit-x").is_err());
        assert_eq!(name(&ModelType::VitH), "vit_h");
    }
}
