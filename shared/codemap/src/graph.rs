//! Weighted directed graph and (personalised) PageRank over it.

/// Adjacency list: `out[i]` holds `(target, weight)` edges of node `i`.
pub type Adjacency = Vec<Vec<(u32, f32)>>;

const DAMPING: f32 = 0.85;
const MAX_ITERS: usize = 40;
const TOLERANCE: f32 = 1e-6;

/// PageRank with teleport vector `personal` (uniform when all zero); sums to 1.
pub fn pagerank(out: &Adjacency, personal: &[f32]) -> Vec<f32> {
    let n = out.len();
    if n == 0 {
        return Vec::new();
    }
    let total: f32 = personal.iter().sum();
    let teleport: Vec<f32> = if total > 0.0 {
        personal.iter().map(|p| p / total).collect()
    } else {
        vec![1.0 / n as f32; n]
    };
    let out_w: Vec<f32> = out.iter().map(|e| e.iter().map(|(_, w)| w).sum()).collect();
    let mut rank = teleport.clone();
    let mut next = vec![0.0f32; n];
    for _ in 0..MAX_ITERS {
        let mut dangling = 0.0f32;
        next.iter_mut().for_each(|x| *x = 0.0);
        for (i, edges) in out.iter().enumerate() {
            if out_w[i] <= 0.0 {
                dangling += rank[i];
                continue;
            }
            let share = rank[i] / out_w[i];
            for &(j, w) in edges {
                next[j as usize] += share * w;
            }
        }
        let mut delta = 0.0f32;
        for i in 0..n {
            let v = DAMPING * (next[i] + dangling * teleport[i]) + (1.0 - DAMPING) * teleport[i];
            delta += (v - rank[i]).abs();
            rank[i] = v;
        }
        if delta < TOLERANCE {
            break;
        }
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_that_everyone_points_to_ranks_first() {
        let g: Adjacency = vec![vec![(3, 1.0)], vec![(3, 1.0)], vec![(3, 1.0)], vec![]];
        let r = pagerank(&g, &[0.0; 4]);
        assert!(r[3] > r[0] && r[3] > r[1]);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-3);
    }

    #[test]
    fn personalisation_favours_neighbours_of_seeds() {
        let g: Adjacency = vec![vec![(1, 1.0)], vec![], vec![(3, 1.0)], vec![]];
        let r = pagerank(&g, &[1.0, 0.0, 0.0, 0.0]);
        assert!(r[1] > r[3]);
    }
}
