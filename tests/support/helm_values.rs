//! The values of the Helm chart as helm-docs reads them: each key of `values.yaml` with the
//! comment block directly above it. Shared by tests/helm.rs (every value is described) and
//! tests/docs.rs (the Helm values reference is generated from these descriptions).
#![allow(dead_code)] // not every test crate uses every item

/// Values whose keys are the operator's own (resource quantities, the serverfirst configuration,
/// a LabelSelector): described as a whole, not key by key.
pub const FREE_FORM: [&str; 3] = ["resources", "config", "webhook.extraNamespaceSelector"];

/// A key of `values.yaml` as the walk visits it.
pub struct DescribedValue {
    /// The dotted name: `certificates.source`.
    pub name: String,
    /// Its line in the file (1-based).
    pub line: usize,
    /// Its helm-docs description, or why it has none.
    pub description: Result<String, String>,
}

/// Every key of `values.yaml` (its `text`) in file order, down to the [`FREE_FORM`] values, each
/// with its description.
pub fn described_values(text: &str) -> Vec<DescribedValue> {
    let lines: Vec<&str> = text.lines().collect();
    let keys: KeyTree = serde_saphyr::from_str(text).expect("values.yaml parses");
    let mut values = Vec::new();
    keys.walk("", &mut |name, key| {
        let (line, column) = (
            key.referenced.line() as usize,
            key.referenced.column() as usize,
        );
        values.push(DescribedValue {
            name: name.to_string(),
            line,
            description: description_above(&lines, line - 1, column - 1),
        });
    });
    values
}

/// The helm-docs description of the key on line `index` (0-based) at `indent`: the comment block
/// directly above it from its last `# -- ` line, at the key's indentation, in sentences.
fn description_above(lines: &[&str], index: usize, indent: usize) -> Result<String, String> {
    let block: Vec<&str> = lines[..index]
        .iter()
        .rev()
        .take_while(|line| line.trim_start().starts_with('#'))
        .copied()
        .collect();
    let start = block
        .iter()
        .position(|line| line.trim_start().starts_with("# -- "))
        .ok_or("no `# -- ` comment on the lines directly above it")?;
    let mut parts = Vec::new();
    for line in block[..=start].iter().rev() {
        if line.len() - line.trim_start().len() != indent {
            return Err(format!("`{line}` is not at the key's indentation"));
        }
        let text = line
            .trim_start()
            .trim_start_matches("# --")
            .trim_start_matches('#');
        parts.push(text.trim());
    }
    let description = parts.join(" ");
    let sentence = description.starts_with(|c: char| c.is_uppercase() || c == '`')
        && description.ends_with('.');
    match sentence {
        true => Ok(description),
        false => Err(format!("`{description}` is not written as sentences")),
    }
}

/// The keys of a YAML mapping with where each one is, nested mappings under their keys.
pub struct KeyTree(pub Vec<(serde_saphyr::Spanned<String>, KeyTree)>);

impl KeyTree {
    /// Calls `visit` with the dotted name and the key of every key, without entering
    /// [`FREE_FORM`] values.
    pub fn walk(&self, prefix: &str, visit: &mut impl FnMut(&str, &serde_saphyr::Spanned<String>)) {
        for (key, children) in &self.0 {
            let name = format!("{prefix}{}", key.value);
            visit(&name, key);
            if !FREE_FORM.contains(&name.as_str()) {
                children.walk(&format!("{name}."), visit);
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for KeyTree {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = KeyTree;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML value")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<KeyTree, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key()? {
                    keys.push((key, map.next_value()?));
                }
                Ok(KeyTree(keys))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<KeyTree, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(KeyTree(Vec::new()))
            }

            fn visit_bool<E>(self, _: bool) -> Result<KeyTree, E> {
                Ok(KeyTree(Vec::new()))
            }

            fn visit_i64<E>(self, _: i64) -> Result<KeyTree, E> {
                Ok(KeyTree(Vec::new()))
            }

            fn visit_u64<E>(self, _: u64) -> Result<KeyTree, E> {
                Ok(KeyTree(Vec::new()))
            }

            fn visit_f64<E>(self, _: f64) -> Result<KeyTree, E> {
                Ok(KeyTree(Vec::new()))
            }

            fn visit_str<E>(self, _: &str) -> Result<KeyTree, E> {
                Ok(KeyTree(Vec::new()))
            }

            fn visit_unit<E>(self) -> Result<KeyTree, E> {
                Ok(KeyTree(Vec::new()))
            }
        }
        deserializer.deserialize_any(Keys)
    }
}
