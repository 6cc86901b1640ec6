//! skymap's colour themes. Filled by the explorer issue: TOML files with
//! semantic roles (dropped, forwarded, error, warning, selection, ...) and the
//! code that loads them and degrades truecolor to 256 and 16 colours.
