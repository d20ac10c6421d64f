//! The three ComfyUI file folders a workspace has.

use std::fmt;
use std::str::FromStr;

/// `input` (uploads), `output` (saved results) or `temp` (previews), as in
/// ComfyUI's `type=` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Input,
    Output,
    Temp,
}

impl FileKind {
    pub const ALL: [FileKind; 3] = [FileKind::Input, FileKind::Output, FileKind::Temp];

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Input => "input",
            FileKind::Output => "output",
            FileKind::Temp => "temp",
        }
    }
}

impl FromStr for FileKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "input" => Ok(FileKind::Input),
            "output" => Ok(FileKind::Output),
            "temp" => Ok(FileKind::Temp),
            _ => Err(()),
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
