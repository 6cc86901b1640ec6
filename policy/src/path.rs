//! Paths to values inside a file or object, for error messages.

use std::fmt;

/// A path to a value in a file, like `workloads[2].serve.errors`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<PathSegment>);

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    /// This path, then the mapping key `key`.
    pub fn key(&self, key: &str) -> FieldPath {
        let mut path = self.clone();
        path.0.push(PathSegment::Key(key.to_owned()));
        path
    }

    /// This path, then the sequence index `index`.
    pub fn index(&self, index: usize) -> FieldPath {
        let mut path = self.clone();
        path.0.push(PathSegment::Index(index));
        path
    }

    /// This path, then all of `rest`.
    pub fn join(&self, rest: &FieldPath) -> FieldPath {
        let mut path = self.clone();
        path.0.extend(rest.0.iter().cloned());
        path
    }

    pub fn segments(&self) -> &[PathSegment] {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Key(key) if i == 0 => f.write_str(key)?,
                PathSegment::Key(key) => write!(f, ".{key}")?,
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}
