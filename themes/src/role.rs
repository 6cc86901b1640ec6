//! `Role`: the semantic names a theme gives styles to. The explorer asks for
//! "dropped" or "selection", never for a colour.

use std::fmt;

macro_rules! roles {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// A semantic role of the explorer's screen.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Role {
            $(#[doc = $doc] $variant,)*
        }

        impl Role {
            /// Every role, in theme-file order.
            pub const ALL: &'static [Role] = &[$(Role::$variant,)*];

            /// The role's key in theme files.
            pub fn name(self) -> &'static str {
                match self {
                    $(Role::$variant => $name,)*
                }
            }
        }
    };
}

roles! {
    Text => "text", "Ordinary text.";
    Muted => "muted", "Secondary text: timestamps, units, placeholders.";
    Border => "border", "Borders of unfocused panes.";
    BorderFocused => "border_focused", "Border of the focused pane.";
    Title => "title", "Pane titles.";
    Header => "header", "Table header rows.";
    Selection => "selection", "The selected row or node.";
    Forwarded => "forwarded", "FORWARDED verdicts and healthy edges.";
    Dropped => "dropped", "DROPPED verdicts and edges with drops.";
    Audit => "audit", "AUDIT, REDIRECTED, TRACED and TRANSLATED verdicts.";
    Error => "error", "Errors: ERROR verdicts, failed connections, 5xx.";
    Warning => "warning", "Warnings: 4xx, DNS failures, reconnecting.";
    Ok => "ok", "Success: 2xx, NOERROR, connected.";
    LatencyGood => "latency_good", "Latency below the warning threshold.";
    LatencyWarn => "latency_warn", "Latency above the warning threshold.";
    LatencyBad => "latency_bad", "Latency above the bad threshold.";
    Dns => "dns", "DNS records.";
    Http => "http", "HTTP records.";
    Namespace => "namespace", "Namespace names.";
    Workload => "workload", "Workload names.";
    Pod => "pod", "Pod names.";
    Service => "service", "Service names.";
    World => "world", "Endpoints outside the cluster.";
    Host => "host", "Node / host-network endpoints.";
    Sparkline => "sparkline", "Rate sparklines.";
    Chart => "chart", "Charts and histograms.";
    Flash => "flash", "Transient flash messages.";
    Paused => "paused", "The PAUSED indicator.";
    KeyHint => "key_hint", "Key names in the help line.";
    SearchMatch => "search_match", "Text matching the current search.";
}

impl Role {
    /// The role with this theme-file key.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|role| role.name() == name)
    }

    /// Position in `Role::ALL`, for table lookups.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        assert_eq!(Role::ALL.len(), 30);
        for (i, role) in Role::ALL.iter().enumerate() {
            assert_eq!(role.index(), i);
            assert_eq!(Role::from_name(role.name()), Some(*role));
        }
        assert_eq!(Role::from_name("border_focused"), Some(Role::BorderFocused));
        assert_eq!(Role::from_name("Dropped"), None);
    }
}
