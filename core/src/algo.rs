//! Small graph algorithms over index-based adjacency, shared by the compiler,
//! AutoEdges and AutoGroup. Deterministic: results depend only on the input order.

/// Returns the vertices of one cycle, in order, if the graph has any.
pub fn find_cycle(n: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Option<Vec<usize>> {
    let mut adj = vec![Vec::new(); n];
    for (f, t) in edges {
        adj[f].push(t);
    }
    for a in &mut adj {
        a.sort_unstable();
    }
    // Iterative DFS with colours: 0 = unseen, 1 = on stack, 2 = done.
    let mut colour = vec![0u8; n];
    let mut parent = vec![usize::MAX; n];
    for start in 0..n {
        if colour[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        colour[start] = 1;
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&w) = adj[v].get(*next) {
                *next += 1;
                match colour[w] {
                    0 => {
                        colour[w] = 1;
                        parent[w] = v;
                        stack.push((w, 0));
                    }
                    1 => {
                        let mut cycle = vec![v];
                        let mut x = v;
                        while x != w {
                            x = parent[x];
                            cycle.push(x);
                        }
                        cycle.reverse();
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                colour[v] = 2;
                stack.pop();
            }
        }
    }
    None
}

/// Topological order (Kahn), smallest index first among ready vertices.
/// `None` if there is a cycle.
pub fn topo_order(n: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Option<Vec<usize>> {
    let mut adj = vec![Vec::new(); n];
    let mut indeg = vec![0usize; n];
    for (f, t) in edges {
        adj[f].push(t);
        indeg[t] += 1;
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&v| indeg[v] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(v)) = ready.pop() {
        order.push(v);
        for &w in &adj[v] {
            indeg[w] -= 1;
            if indeg[w] == 0 {
                ready.push(std::cmp::Reverse(w));
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// Topological order by depth-first search: the reverse of a post-order that
/// starts from each vertex in index order and visits successors in the order
/// given. Every DFS subtree is a contiguous run of it, so in trees and
/// tree-like DAGs the descendants of a vertex are few runs. `None` if there is
/// a cycle. Iterative: a chain of any length is fine.
pub fn dfs_topo_order(succ: &[Vec<usize>]) -> Option<Vec<usize>> {
    let n = succ.len();
    // 0 = unseen, 1 = on the stack, 2 = done.
    let mut colour = vec![0u8; n];
    let mut post = Vec::with_capacity(n);
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..n {
        if colour[start] != 0 {
            continue;
        }
        colour[start] = 1;
        stack.push((start, 0));
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&w) = succ[v].get(*next) {
                *next += 1;
                match colour[w] {
                    0 => {
                        colour[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => return None,
                    _ => {}
                }
            } else {
                colour[v] = 2;
                post.push(v);
                stack.pop();
            }
        }
    }
    post.reverse();
    Some(post)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dfs_topo_order_orders_every_edge_and_finds_cycles() {
        let succ = vec![vec![2, 1], vec![3], vec![3], vec![]];
        let order = dfs_topo_order(&succ).unwrap();
        let pos = |v| order.iter().position(|&x| x == v).unwrap();
        for (v, ws) in succ.iter().enumerate() {
            for &w in ws {
                assert!(pos(v) < pos(w), "{order:?}");
            }
        }
        assert_eq!(dfs_topo_order(&[vec![1], vec![2], vec![0]]), None);
        let chain: Vec<Vec<usize>> = (0..200_000)
            .map(|i| if i + 1 < 200_000 { vec![i + 1] } else { vec![] })
            .collect();
        assert_eq!(dfs_topo_order(&chain).unwrap().len(), 200_000);
    }
}
