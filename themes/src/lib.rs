//! Colour themes (filled by the explorer issue).
