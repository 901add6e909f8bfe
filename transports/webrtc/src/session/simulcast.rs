//! Simulcast on both sides of the server. Ingest: the rids a publisher announced, ordered from
//! the lowest layer to the highest (the engine's layer index), with their resolution and
//! bitrate. Egress: which layer a subscriber gets, from its bandwidth estimate — up only with
//! headroom, down as soon as the layer no longer fits, so it does not flap.

use junction_core::LayerInfo;
use str0m::media::SimulcastLayer;

/// Bitrates assumed for layers whose publisher did not state one (a typical 3-layer browser
/// simulcast: quarter, half and full 720p).
const DEFAULT_BITRATES: [[u64; 3]; 3] = [[1_500_000, 0, 0], [300_000, 1_500_000, 0], [150_000, 500_000, 1_500_000]];

/// The order of rid names that say what they are.
const NAMED_ORDERS: &[&[&str]] =
    &[&["q", "h", "f"], &["l", "m", "h"], &["low", "mid", "high"], &["low", "medium", "high"]];

/// Layers lowest first. Stated resolutions or bitrates decide; otherwise well-known rid names
/// (`q/h/f`, `l/m/h`), then numbers ascending; otherwise the publisher's own order.
pub(crate) fn order_layers(announced: &[SimulcastLayer]) -> Vec<LayerInfo> {
    let mut layers: Vec<LayerInfo> = announced.iter().map(layer_info).collect();
    let size = |l: &LayerInfo| match (l.width, l.height) {
        (Some(w), Some(h)) => Some(w as u64 * h as u64),
        (Some(w), None) => Some(w as u64),
        (None, Some(h)) => Some(h as u64),
        (None, None) => None,
    };
    if layers.iter().all(|l| size(l).is_some()) {
        layers.sort_by_key(|l| size(l));
    } else if layers.iter().all(|l| l.max_bitrate.is_some()) {
        layers.sort_by_key(|l| l.max_bitrate);
    } else if let Some(order) = NAMED_ORDERS.iter().find(|order| layers.iter().all(|l| order.contains(&l.rid.as_str())))
    {
        layers.sort_by_key(|l| order.iter().position(|name| *name == l.rid));
    } else if layers.iter().all(|l| l.rid.parse::<u32>().is_ok()) {
        layers.sort_by_key(|l| l.rid.parse::<u32>().unwrap_or(0));
    }
    let count = layers.len().clamp(1, 3);
    for (index, layer) in layers.iter_mut().enumerate() {
        if layer.max_bitrate.is_none() {
            layer.max_bitrate = DEFAULT_BITRATES[count - 1].get(index).copied().filter(|b| *b > 0);
        }
    }
    layers
}

fn layer_info(layer: &SimulcastLayer) -> LayerInfo {
    let attribute =
        |key: &str| layer.attributes.as_ref()?.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.parse::<u64>().ok());
    LayerInfo {
        rid: layer.rid.to_string(),
        width: attribute("max-width").map(|v| v as u32),
        height: attribute("max-height").map(|v| v as u32),
        max_bitrate: attribute("max-br"),
    }
}

/// Head-room needed before moving up a layer.
const UP_FACTOR: f64 = 1.2;
/// How far under its bitrate the current layer may fall before moving down.
const KEEP_FACTOR: f64 = 0.85;

/// The layer a subscriber with `budget_bps` should get, given the layer it is on.
pub(crate) fn choose_layer(budget_bps: u64, layers: &[LayerInfo], current: Option<u8>) -> u8 {
    let need = |index: usize| layers.get(index).and_then(|l| l.max_bitrate).unwrap_or(0) as f64;
    let budget = budget_bps as f64;
    let fits_up = (0..layers.len()).rev().find(|&i| need(i) * UP_FACTOR <= budget).unwrap_or(0);
    match current.map(usize::from) {
        Some(current) if current < layers.len() => {
            if fits_up > current {
                fits_up as u8
            } else if need(current) * KEEP_FACTOR <= budget {
                current as u8
            } else {
                (0..current).rev().find(|&i| need(i) <= budget).unwrap_or(0) as u8
            }
        }
        _ => fits_up as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(rid: &str, attrs: &[(&str, &str)]) -> SimulcastLayer {
        let mut layer = SimulcastLayer::new(rid);
        if !attrs.is_empty() {
            layer.attributes = Some(attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        }
        layer
    }

    fn rids(layers: &[LayerInfo]) -> Vec<&str> {
        layers.iter().map(|l| l.rid.as_str()).collect()
    }

    #[test]
    fn layers_are_ordered_lowest_first() {
        let named = order_layers(&[layer("f", &[]), layer("h", &[]), layer("q", &[])]);
        assert_eq!(rids(&named), ["q", "h", "f"]);
        assert_eq!(named[0].max_bitrate, Some(150_000));
        assert_eq!(named[2].max_bitrate, Some(1_500_000));

        let sized = order_layers(&[
            layer("a", &[("max-width", "1280"), ("max-height", "720")]),
            layer("b", &[("max-width", "320"), ("max-height", "180")]),
        ]);
        assert_eq!(rids(&sized), ["b", "a"]);
        assert_eq!(sized[0].width, Some(320));

        let numbered = order_layers(&[layer("2", &[]), layer("0", &[]), layer("1", &[])]);
        assert_eq!(rids(&numbered), ["0", "1", "2"]);
        let by_rate = order_layers(&[layer("x", &[("max-br", "900000")]), layer("y", &[("max-br", "90000")])]);
        assert_eq!(rids(&by_rate), ["y", "x"]);
        let unknown = order_layers(&[layer("hi", &[]), layer("lo", &[])]);
        assert_eq!(rids(&unknown), ["hi", "lo"], "publisher order kept when nothing says otherwise");
    }

    #[test]
    fn layer_choice_follows_the_budget_with_hysteresis() {
        let layers = order_layers(&[layer("q", &[]), layer("h", &[]), layer("f", &[])]);
        assert_eq!(choose_layer(100_000, &layers, None), 0);
        assert_eq!(choose_layer(700_000, &layers, None), 1);
        assert_eq!(choose_layer(5_000_000, &layers, None), 2);
        // On layer 1 (500k): 560k is not enough head-room to go up, nor reason to go down.
        assert_eq!(choose_layer(560_000, &layers, Some(1)), 1);
        // 440k is within the keep margin; 400k is not.
        assert_eq!(choose_layer(440_000, &layers, Some(1)), 1);
        assert_eq!(choose_layer(400_000, &layers, Some(1)), 0);
        assert_eq!(choose_layer(1_700_000, &layers, Some(2)), 2);
        assert_eq!(choose_layer(1_000_000, &layers, Some(2)), 1);
        assert_eq!(choose_layer(0, &[], Some(3)), 0);
    }
}
