//! The stage graph (petgraph): topological order, cycles named, ancestors and descendants.

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};
use std::collections::BTreeSet;

fn build(n: usize, edges: &[(usize, usize)]) -> DiGraph<usize, ()> {
    let mut g = DiGraph::new();
    for i in 0..n {
        g.add_node(i);
    }
    for &(a, b) in edges {
        g.add_edge(NodeIndex::new(a), NodeIndex::new(b), ());
    }
    g
}

/// A topological order of `0..n` for edges `(from, to)`, stable (lowest index first among
/// ready nodes, so file order is kept); or the stages of one cycle, in loop order.
pub fn topo_order(n: usize, edges: &[(usize, usize)]) -> Result<Vec<usize>, Vec<usize>> {
    let g = build(n, edges);
    let mut self_loop = vec![false; n];
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        out[a].push(b);
        if a == b {
            self_loop[a] = true;
        }
    }
    // A cycle: a strongly connected component with more than one node, or a self-loop.
    for scc in tarjan_scc(&g) {
        let is_cycle = scc.len() > 1 || self_loop[scc[0].index()];
        if is_cycle {
            return Err(cycle_path(
                &scc.iter().map(|n| n.index()).collect::<Vec<_>>(),
                edges,
            ));
        }
    }
    let mut indeg = vec![0usize; n];
    for &(_, b) in edges {
        indeg[b] += 1;
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(&i) = ready.iter().next() {
        ready.remove(&i);
        order.push(i);
        for &b in &out[i] {
            indeg[b] -= 1;
            if indeg[b] == 0 {
                ready.insert(b);
            }
        }
    }
    Ok(order)
}

/// One simple loop inside a strongly connected component, starting at its lowest index.
fn cycle_path(scc: &[usize], edges: &[(usize, usize)]) -> Vec<usize> {
    let start = *scc.iter().min().unwrap();
    let in_scc: std::collections::HashSet<usize> = scc.iter().copied().collect();
    let mut next_of: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    for &(a, b) in edges {
        if in_scc.contains(&a) && in_scc.contains(&b) {
            next_of.entry(a).or_default().push(b);
        }
    }
    let mut path = vec![start];
    let mut seen = std::collections::HashSet::from([start]);
    let mut cur = start;
    loop {
        let mut nexts = next_of.remove(&cur).unwrap_or_default();
        nexts.sort();
        if nexts.contains(&start) {
            return path;
        }
        match nexts.into_iter().find(|b| !seen.contains(b)) {
            Some(b) => {
                path.push(b);
                seen.insert(b);
                cur = b;
            }
            None => return path,
        }
    }
}

/// `roots` and everything upstream of them.
pub fn ancestors(n: usize, edges: &[(usize, usize)], roots: &[usize]) -> BTreeSet<usize> {
    let g = build(n, edges);
    let rev = Reversed(&g);
    let mut out = BTreeSet::new();
    // One walk for all roots: what one root reached is not walked again.
    let mut dfs = Dfs::empty(rev);
    for &r in roots {
        dfs.move_to(NodeIndex::new(r));
        while let Some(x) = dfs.next(rev) {
            out.insert(x.index());
        }
    }
    out
}

/// `roots` and everything downstream of them.
pub fn descendants(n: usize, edges: &[(usize, usize)], roots: &[usize]) -> BTreeSet<usize> {
    let g = build(n, edges);
    let mut out = BTreeSet::new();
    let mut dfs = Dfs::empty(&g);
    for &r in roots {
        dfs.move_to(NodeIndex::new(r));
        while let Some(x) = dfs.next(&g) {
            out.insert(x.index());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_finds_cycles() {
        assert_eq!(
            topo_order(4, &[(2, 0), (0, 1), (3, 1)]).unwrap(),
            vec![2, 0, 3, 1]
        );
        assert_eq!(
            topo_order(3, &[(0, 1), (1, 2), (2, 0)]).unwrap_err(),
            vec![0, 1, 2]
        );
        assert_eq!(topo_order(2, &[(1, 1)]).unwrap_err(), vec![1]);
    }

    #[test]
    fn walks_up_and_down() {
        let e = [(0, 1), (1, 2), (3, 2), (2, 4)];
        assert_eq!(
            ancestors(5, &e, &[2]).into_iter().collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            descendants(5, &e, &[1]).into_iter().collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
    }
}
