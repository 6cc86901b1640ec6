//! Where the routes lie, by row and by column, so painting a window of a big map
//! looks only at what falls inside it.
//!
//! Every route is cut into straight runs between its corners; horizontal runs are
//! filed under their row, vertical ones under their column, and each route's
//! arrow, port and label under their rows. A window of `w × h` cells then visits
//! `h` row lists and `w` column lists instead of every cell of every route. Built
//! once per layout; nothing here depends on an edge's health or label text, which
//! the app may restyle in place.

use super::layout::Route;

/// A straight piece of a route along one row or one column: cells `lo..=hi` of
/// that row (column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// Index into `Layout::routes`.
    pub route: usize,
    pub lo: usize,
    pub hi: usize,
    /// The `lo` (`hi`) cell is the route's attach or arrow cell, which gets no line.
    pub lo_is_end: bool,
    pub hi_is_end: bool,
}

/// Lists keyed by a row or column number, stored flat.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Buckets<T> {
    /// Items of key `k` are `items[start[k]..start[k + 1]]`.
    start: Vec<usize>,
    items: Vec<T>,
}

impl<T> Default for Buckets<T> {
    fn default() -> Self {
        Self {
            start: Vec::new(),
            items: Vec::new(),
        }
    }
}

impl<T: Copy> Buckets<T> {
    fn new(mut keyed: Vec<(usize, T)>) -> Self {
        let keys = keyed.iter().map(|&(k, _)| k + 1).max().unwrap_or(0);
        // Stable, so each list keeps route order.
        keyed.sort_by_key(|&(k, _)| k);
        let mut start = vec![0; keys + 1];
        for &(k, _) in &keyed {
            start[k + 1] += 1;
        }
        for k in 0..keys {
            start[k + 1] += start[k];
        }
        Self {
            start,
            items: keyed.into_iter().map(|(_, t)| t).collect(),
        }
    }

    fn get(&self, key: usize) -> &[T] {
        match (self.start.get(key), self.start.get(key + 1)) {
            (Some(&a), Some(&b)) => &self.items[a..b],
            _ => &[],
        }
    }
}

/// The routes of one layout, filed by row and column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RouteIndex {
    rows: Buckets<Run>,
    cols: Buckets<Run>,
    /// Routes with an arrow, port or label on each row, in route order.
    marks: Buckets<usize>,
    /// How many routes it was built from, to notice routes swapped afterwards.
    routes: usize,
}

impl RouteIndex {
    pub fn new(routes: &[Route]) -> Self {
        let mut rows = Vec::new();
        let mut cols = Vec::new();
        let mut marks = Vec::new();
        for (route, r) in routes.iter().enumerate() {
            let last = r.points.len().saturating_sub(1);
            for (k, pair) in r.points.windows(2).enumerate() {
                let (a, b) = (pair[0], pair[1]);
                let (a_end, b_end) = (k == 0, k + 1 == last);
                // Corners off a shared row or column walk an L, along the row
                // first, as `Route::cells` does.
                let corner = (b.0, a.1);
                if a.1 == b.1 || a.0 == b.0 {
                    file(&mut rows, &mut cols, route, a, b, a_end, b_end);
                } else {
                    file(&mut rows, &mut cols, route, a, corner, a_end, false);
                    file(&mut rows, &mut cols, route, corner, b, false, b_end);
                }
            }
            let mut on = vec![r.arrow().1, r.attach().1];
            on.extend(r.label_at.map(|(_, y)| y));
            on.sort_unstable();
            on.dedup();
            marks.extend(on.into_iter().map(|y| (y, route)));
        }
        Self {
            rows: Buckets::new(rows),
            cols: Buckets::new(cols),
            marks: Buckets::new(marks),
            routes: routes.len(),
        }
    }

    /// Whether it was built from routes like these.
    pub fn fits(&self, routes: &[Route]) -> bool {
        self.routes == routes.len()
    }

    /// Horizontal runs on row `y`.
    pub fn row(&self, y: usize) -> &[Run] {
        self.rows.get(y)
    }

    /// Vertical runs in column `x`.
    pub fn col(&self, x: usize) -> &[Run] {
        self.cols.get(x)
    }

    /// Routes with an arrow, port or label on row `y`.
    pub fn marks(&self, y: usize) -> &[usize] {
        self.marks.get(y)
    }
}

/// Files the run from `a` to `b` (sharing a row or a column) under its row or
/// column, lowest cell first; zero-length runs draw nothing and are left out.
fn file(
    rows: &mut Vec<(usize, Run)>,
    cols: &mut Vec<(usize, Run)>,
    route: usize,
    a: (usize, usize),
    b: (usize, usize),
    a_end: bool,
    b_end: bool,
) {
    let (key, lo, hi, list) = if a.1 == b.1 {
        (a.1, a.0, b.0, rows)
    } else {
        (a.0, a.1, b.1, cols)
    };
    if lo == hi {
        return;
    }
    let run = if lo < hi {
        Run {
            route,
            lo,
            hi,
            lo_is_end: a_end,
            hi_is_end: b_end,
        }
    } else {
        Run {
            route,
            lo: hi,
            hi: lo,
            lo_is_end: b_end,
            hi_is_end: a_end,
        }
    };
    list.push((key, run));
}
