//! Go's `sort.Sort` as the InfluxDB 1.6.7 we compare against was built
//! with (Debian's, Go 1.19: pattern-defeating quicksort). It is not stable,
//! and InfluxDB's `mode()` and `percentile()` report the point that it
//! leaves at a position among equal values, so giving the same answers
//! means sorting exactly as it does, step for step.

/// Sort `data` in place as Go's `sort.Sort` does with `less`.
pub fn sort_by<T>(data: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = data.len();
    if n <= 1 {
        return;
    }
    let limit = usize::BITS - n.leading_zeros();
    let mut sorter = Sorter { data, less };
    sorter.pdqsort(0, n, limit);
}

struct Sorter<'a, T, F> {
    data: &'a mut [T],
    less: F,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Hint {
    Unknown,
    Increasing,
    Decreasing,
}

impl<T, F: Fn(&T, &T) -> bool> Sorter<'_, T, F> {
    fn less(&self, i: usize, j: usize) -> bool {
        (self.less)(&self.data[i], &self.data[j])
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.data.swap(i, j);
    }

    fn insertion_sort(&mut self, a: usize, b: usize) {
        for i in a + 1..b {
            let mut j = i;
            while j > a && self.less(j, j - 1) {
                self.swap(j, j - 1);
                j -= 1;
            }
        }
    }

    fn sift_down(&mut self, lo: usize, hi: usize, first: usize) {
        let mut root = lo;
        loop {
            let mut child = 2 * root + 1;
            if child >= hi {
                return;
            }
            if child + 1 < hi && self.less(first + child, first + child + 1) {
                child += 1;
            }
            if !self.less(first + root, first + child) {
                return;
            }
            self.swap(first + root, first + child);
            root = child;
        }
    }

    fn heap_sort(&mut self, a: usize, b: usize) {
        let first = a;
        let hi = b - a;
        for i in (0..=(hi - 1) / 2).rev() {
            self.sift_down(i, hi, first);
        }
        for i in (0..hi).rev() {
            self.swap(first, first + i);
            self.sift_down(0, i, first);
        }
    }

    fn pdqsort(&mut self, mut a: usize, mut b: usize, mut limit: u32) {
        const MAX_INSERTION: usize = 12;
        let mut was_balanced = true;
        let mut was_partitioned = true;
        loop {
            let length = b - a;
            if length <= MAX_INSERTION {
                self.insertion_sort(a, b);
                return;
            }
            if limit == 0 {
                self.heap_sort(a, b);
                return;
            }
            if !was_balanced {
                self.break_patterns(a, b);
                limit -= 1;
            }
            let (mut pivot, mut hint) = self.choose_pivot(a, b);
            if hint == Hint::Decreasing {
                self.reverse_range(a, b);
                pivot = (b - 1) - (pivot - a);
                hint = Hint::Increasing;
            }
            if was_balanced
                && was_partitioned
                && hint == Hint::Increasing
                && self.partial_insertion_sort(a, b)
            {
                return;
            }
            if a > 0 && !self.less(a - 1, pivot) {
                a = self.partition_equal(a, b, pivot);
                continue;
            }
            let (mid, already) = self.partition(a, b, pivot);
            was_partitioned = already;
            let (left, right) = (mid - a, b - mid);
            let balance_threshold = length / 8;
            if left < right {
                was_balanced = left >= balance_threshold;
                self.pdqsort(a, mid, limit);
                a = mid + 1;
            } else {
                was_balanced = right >= balance_threshold;
                self.pdqsort(mid + 1, b, limit);
                b = mid;
            }
        }
    }

    fn partition(&mut self, a: usize, b: usize, pivot: usize) -> (usize, bool) {
        self.swap(a, pivot);
        let (mut i, mut j) = (a as isize + 1, b as isize - 1);
        while i <= j && self.less(i as usize, a) {
            i += 1;
        }
        while i <= j && !self.less(j as usize, a) {
            j -= 1;
        }
        if i > j {
            self.swap(j as usize, a);
            return (j as usize, true);
        }
        self.swap(i as usize, j as usize);
        i += 1;
        j -= 1;
        loop {
            while i <= j && self.less(i as usize, a) {
                i += 1;
            }
            while i <= j && !self.less(j as usize, a) {
                j -= 1;
            }
            if i > j {
                break;
            }
            self.swap(i as usize, j as usize);
            i += 1;
            j -= 1;
        }
        self.swap(j as usize, a);
        (j as usize, false)
    }

    fn partition_equal(&mut self, a: usize, b: usize, pivot: usize) -> usize {
        self.swap(a, pivot);
        let (mut i, mut j) = (a as isize + 1, b as isize - 1);
        loop {
            while i <= j && !self.less(a, i as usize) {
                i += 1;
            }
            while i <= j && self.less(a, j as usize) {
                j -= 1;
            }
            if i > j {
                break;
            }
            self.swap(i as usize, j as usize);
            i += 1;
            j -= 1;
        }
        i as usize
    }

    fn partial_insertion_sort(&mut self, a: usize, b: usize) -> bool {
        const MAX_STEPS: usize = 5;
        const SHORTEST_SHIFTING: usize = 50;
        let mut i = a + 1;
        for _ in 0..MAX_STEPS {
            while i < b && !self.less(i, i - 1) {
                i += 1;
            }
            if i == b {
                return true;
            }
            if b - a < SHORTEST_SHIFTING {
                return false;
            }
            self.swap(i, i - 1);
            if i - a >= 2 {
                let mut j = i - 1;
                while j >= 1 {
                    if !self.less(j, j - 1) {
                        break;
                    }
                    self.swap(j, j - 1);
                    j -= 1;
                }
            }
            if b - i >= 2 {
                for j in i + 1..b {
                    if !self.less(j, j - 1) {
                        break;
                    }
                    self.swap(j, j - 1);
                }
            }
        }
        false
    }

    fn break_patterns(&mut self, a: usize, b: usize) {
        let length = b - a;
        if length >= 8 {
            let mut random = length as u64;
            let modulus = 1usize << (usize::BITS - length.leading_zeros());
            let idx = a + (length / 4) * 2 - 1;
            for i in 0..3 {
                random ^= random << 13;
                random ^= random >> 17;
                random ^= random << 5;
                let mut other = (random as usize) & (modulus - 1);
                if other >= length {
                    other -= length;
                }
                self.swap(idx + i, a + other);
            }
        }
    }

    fn choose_pivot(&mut self, a: usize, b: usize) -> (usize, Hint) {
        const SHORTEST_NINTHER: usize = 50;
        const MAX_SWAPS: usize = 4 * 3;
        let l = b - a;
        let mut swaps = 0;
        let mut i = a + l / 4;
        let mut j = a + l / 4 * 2;
        let mut k = a + l / 4 * 3;
        if l >= 8 {
            if l >= SHORTEST_NINTHER {
                i = self.median(i - 1, i, i + 1, &mut swaps);
                j = self.median(j - 1, j, j + 1, &mut swaps);
                k = self.median(k - 1, k, k + 1, &mut swaps);
            }
            j = self.median(i, j, k, &mut swaps);
        }
        match swaps {
            0 => (j, Hint::Increasing),
            MAX_SWAPS => (j, Hint::Decreasing),
            _ => (j, Hint::Unknown),
        }
    }

    fn order2(&self, a: usize, b: usize, swaps: &mut usize) -> (usize, usize) {
        if self.less(b, a) {
            *swaps += 1;
            (b, a)
        } else {
            (a, b)
        }
    }

    fn median(&self, a: usize, b: usize, c: usize, swaps: &mut usize) -> usize {
        let (a, b) = self.order2(a, b, swaps);
        let (b, c) = self.order2(b, c, swaps);
        let (_a, b) = self.order2(a, b, swaps);
        let _ = c;
        b
    }

    fn reverse_range(&mut self, a: usize, b: usize) {
        let (mut i, mut j) = (a, b - 1);
        while i < j {
            self.swap(i, j);
            i += 1;
            j -= 1;
        }
    }
}

/// Go's `container/heap` over `n` items with `less`: the order in which
/// `pop` hands them out is what InfluxDB's merge iterators give for items
/// that compare equal.
struct GoHeap<T> {
    items: Vec<T>,
}

impl<T> GoHeap<T> {
    fn init(items: Vec<T>, less: &impl Fn(&T, &T) -> bool) -> GoHeap<T> {
        let mut heap = GoHeap { items };
        let n = heap.items.len();
        for i in (0..n / 2).rev() {
            heap.down(i, n, less);
        }
        heap
    }

    fn push(&mut self, item: T, less: &impl Fn(&T, &T) -> bool) {
        self.items.push(item);
        let mut j = self.items.len() - 1;
        while j > 0 {
            let i = (j - 1) / 2;
            if !less(&self.items[j], &self.items[i]) {
                break;
            }
            self.items.swap(i, j);
            j = i;
        }
    }

    fn pop(&mut self, less: &impl Fn(&T, &T) -> bool) -> Option<T> {
        let n = self.items.len().checked_sub(1)?;
        self.items.swap(0, n);
        self.down(0, n, less);
        self.items.pop()
    }

    fn down(&mut self, i0: usize, n: usize, less: &impl Fn(&T, &T) -> bool) {
        let mut i = i0;
        loop {
            let j1 = 2 * i + 1;
            if j1 >= n {
                break;
            }
            let mut j = j1;
            if j1 + 1 < n && less(&self.items[j1 + 1], &self.items[j1]) {
                j = j1 + 1;
            }
            if !less(&self.items[j], &self.items[i]) {
                break;
            }
            self.items.swap(i, j);
            i = j;
        }
    }
}

/// The order in which InfluxDB 1.6's sorted merge gives the points of one
/// group's series (`times[member]`, ascending), as `(member, index)`:
/// point by point by time, with ties between series as Go's heap leaves
/// them. It is the order in which `mode()` and `percentile()` see points.
pub fn feed_order(times: &[Vec<i64>]) -> Vec<(usize, usize)> {
    let total = times.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    // (member, cursor) of each series with points left.
    let items: Vec<(usize, usize)> = (0..times.len())
        .filter(|member| !times[*member].is_empty())
        .map(|member| (member, 0))
        .collect();
    let less = |a: &(usize, usize), b: &(usize, usize)| times[a.0][a.1] < times[b.0][b.1];
    let mut heap = GoHeap::init(items, &less);
    while let Some((member, cursor)) = heap.pop(&less) {
        out.push((member, cursor));
        if cursor + 1 < times[member].len() {
            heap.push((member, cursor + 1), &less);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// Go 1.19's `sort.Sort` on 432 inputs (sizes up to 2,000, few to many
    /// distinct values, random, ascending, descending and sawtooth):
    /// `(size, distinct, shape, FNV-1a of the resulting order of the
    /// original indexes)`, from `scripts/gosort_cases.go` (`go run`).
    /// Equal values must end where Go leaves them.
    #[test]
    fn permutes_equal_values_as_go_does() {
        let cases: Vec<[u64; 4]> =
            serde_json::from_str(include_str!("gosort_cases.json")).expect("cases");
        let mut seed: u64 = 12345;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for [n, distinct, shape, expected] in cases {
            let n = n as usize;
            let values: Vec<u64> = (0..n)
                .map(|i| match shape {
                    0 => next() % distinct,
                    1 => (i as u64 + next() % 3) % (distinct + 1),
                    2 => (n - i) as u64 % (distinct + 1),
                    _ => (i % 17) as u64 % (distinct + 1),
                })
                .collect();
            let mut items: Vec<(u64, usize)> = values.iter().copied().zip(0..).collect();
            super::sort_by(&mut items, |a, b| a.0 < b.0);
            let mut hash: u64 = 14695981039346656037;
            for (_, id) in &items {
                hash ^= *id as u64;
                hash = hash.wrapping_mul(1099511628211);
            }
            assert_eq!(hash, expected, "n={n} distinct={distinct} shape={shape}");
        }
    }

    /// Eight series, the seventh without a point at the first time: Go's
    /// heap hands the others out in the order InfluxDB 1.6.7 answers
    /// `SELECT procs FROM cpu LIMIT 7` on the conformance data (server01,
    /// 08, 02, 04, 05, 03, 06).
    #[test]
    fn feed_order_breaks_ties_as_go_heap_does() {
        let times: Vec<Vec<i64>> = (0..8)
            .map(|member| if member == 6 { vec![10] } else { vec![0, 10] })
            .collect();
        let first: Vec<usize> = super::feed_order(&times)
            .into_iter()
            .take(7)
            .map(|(member, _)| member)
            .collect();
        assert_eq!(first, vec![0, 7, 1, 3, 4, 2, 5]);
    }

    proptest! {
        #[test]
        fn sorts(mut values in proptest::collection::vec(0u8..20, 0..400)) {
            let mut expected = values.clone();
            expected.sort_unstable();
            super::sort_by(&mut values, |a, b| a < b);
            prop_assert_eq!(values, expected);
        }
    }
}
