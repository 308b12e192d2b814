//! A batch split by server, and its answers put back in the batch's order: written once for
//! every remote backend, so that a page costs one exchange per server, all at once.

/// The items of one batch that go to one server, and their places in the batch.
struct Group<S, T> {
    server: S,
    places: Vec<usize>,
    items: Vec<T>,
}

/// The items of a batch grouped by server (`server_of` each item), in order of each server's
/// first item; within a group, in the batch's order.
fn by_server<S: PartialEq, T>(
    items: impl IntoIterator<Item = T>,
    mut server_of: impl FnMut(&T) -> S,
) -> Vec<Group<S, T>> {
    let mut groups: Vec<Group<S, T>> = Vec::new();
    for (place, item) in items.into_iter().enumerate() {
        let server = server_of(&item);
        // A linear search: a batch goes to a handful of servers.
        let group = match groups.iter().position(|g| g.server == server) {
            Some(at) => &mut groups[at],
            None => {
                groups.push(Group {
                    server,
                    places: Vec::new(),
                    items: Vec::new(),
                });
                groups.last_mut().expect("just pushed")
            }
        };
        group.places.push(place);
        group.items.push(item);
    }
    groups
}

/// The answers of a batch of `count` items in the batch's order, from `(place, answer)` pairs
/// in any order; a place that got no answer gets `missing()`.
pub(crate) fn in_order<A>(
    count: usize,
    answers: impl IntoIterator<Item = (usize, A)>,
    mut missing: impl FnMut() -> A,
) -> Vec<A> {
    let mut out: Vec<Option<A>> = (0..count).map(|_| None).collect();
    for (place, answer) in answers {
        out[place] = Some(answer);
    }
    out.into_iter()
        .map(|answer| answer.unwrap_or_else(&mut missing))
        .collect()
}

/// An answer of `error` for each of `count` items.
pub(crate) fn all_err<T>(count: usize, error: crate::Error) -> Vec<crate::Result<T>> {
    (0..count).map(|_| Err(error.clone())).collect()
}

/// Sends a batch to its servers (`server_of` each item), one `send` per server, all at once,
/// and answers in the batch's order (`send` answers once per item, in its group's order).
pub(crate) async fn scatter<S: PartialEq, T, A, F: Future<Output = Vec<A>>>(
    items: impl IntoIterator<Item = T>,
    server_of: impl FnMut(&T) -> S,
    mut send: impl FnMut(S, Vec<T>) -> F,
) -> Vec<A> {
    let mut groups = by_server(items, server_of);
    if let [_] = groups[..] {
        // All on one server, in their order.
        let group = groups.pop().expect("one group");
        return send(group.server, group.items).await;
    }
    let count = groups.iter().map(|group| group.places.len()).sum();
    let mut places = Vec::with_capacity(groups.len());
    let sends = groups
        .into_iter()
        .map(|group| {
            places.push(group.places);
            send(group.server, group.items)
        })
        .collect();
    let answers = crate::io::join_all(sends).await;
    let answers = places
        .into_iter()
        .zip(answers)
        .flat_map(|(places, answers)| places.into_iter().zip(answers));
    in_order(count, answers, || {
        unreachable!("every item was sent to one server")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_split_by_server_comes_back_in_its_order() {
        let keys = ["a1", "b1", "a2", "c1", "b2"];
        let groups = by_server(keys, |key| key.as_bytes()[0]);
        let servers: Vec<u8> = groups.iter().map(|g| g.server).collect();
        assert_eq!(servers, b"abc");
        assert_eq!(groups[0].places, [0, 2]);
        assert_eq!(groups[1].items, ["b1", "b2"]);
        // Each server answers for its own keys, the servers in any order.
        let answers = groups.into_iter().rev().flat_map(|g| {
            g.places
                .into_iter()
                .zip(g.items.into_iter().map(str::to_uppercase))
        });
        let answers = in_order(keys.len() + 1, answers, || "none".to_owned());
        assert_eq!(answers, ["A1", "B1", "A2", "C1", "B2", "none"]);
    }
}
