//! The command slots of a queue: what is in flight under each command id,
//! with the free ids on a stack, so that queuing a command and counting
//! those in flight take constant time however deep the queue is.

/// Entries by command id, and the ids not in use.
#[derive(Debug)]
pub(crate) struct Slots<T> {
    entries: Vec<Option<T>>,
    /// Free ids, the lowest on top at first.
    free: Vec<u16>,
}

impl<T> Slots<T> {
    /// `count` free slots (ids `0..count`; at most 65535).
    pub(crate) fn new(count: usize) -> Self {
        let count = count.min(usize::from(u16::MAX));
        Self {
            entries: std::iter::repeat_with(|| None).take(count).collect(),
            free: (0..count as u16).rev().collect(),
        }
    }

    /// How many slots there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many hold a command.
    pub(crate) fn busy(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// The id the next [`Slots::occupy`] takes, if one is free.
    pub(crate) fn next_free(&self) -> Option<usize> {
        self.free.last().map(|&id| usize::from(id))
    }

    /// Puts `value` in the slot [`Slots::next_free`] named, and returns its id.
    pub(crate) fn occupy(&mut self, value: T) -> Option<usize> {
        let id = usize::from(self.free.pop()?);
        self.entries[id] = Some(value);
        Some(id)
    }

    /// The entry of `id`, if it holds one.
    pub(crate) fn get_mut(&mut self, id: usize) -> Option<&mut T> {
        self.entries.get_mut(id)?.as_mut()
    }

    /// Whether `id` holds nothing (or is no slot at all).
    pub(crate) fn is_free(&self, id: usize) -> bool {
        self.entries.get(id).is_none_or(Option::is_none)
    }

    /// Takes the entry of `id` out, freeing the slot.
    pub(crate) fn take(&mut self, id: usize) -> Option<T> {
        let value = self.entries.get_mut(id)?.take()?;
        self.free.push(id as u16);
        Some(value)
    }

    /// Every entry, with its id.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.entries
            .iter_mut()
            .enumerate()
            .filter_map(|(id, e)| Some((id, e.as_mut()?)))
    }

    /// Takes every entry out, in id order.
    pub(crate) fn take_all(&mut self) -> Vec<(usize, T)> {
        let taken: Vec<(usize, T)> = self
            .entries
            .iter_mut()
            .enumerate()
            .filter_map(|(id, e)| Some((id, e.take()?)))
            .collect();
        self.free = (0..self.entries.len() as u16).rev().collect();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn ids_are_reused_only_once_freed_and_counted_as_they_go() {
        let mut slots = Slots::new(3);
        assert_eq!(
            (slots.len(), slots.busy(), slots.next_free()),
            (3, 0, Some(0))
        );
        assert_eq!(slots.occupy('a'), Some(0));
        assert_eq!(slots.occupy('b'), Some(1));
        assert_eq!(slots.occupy('c'), Some(2));
        assert_eq!(
            (slots.busy(), slots.next_free(), slots.occupy('d')),
            (3, None, None)
        );
        assert_eq!(slots.take(1), Some('b'));
        assert_eq!(slots.take(1), None, "taken once");
        assert!(slots.is_free(1) && !slots.is_free(0) && slots.is_free(7));
        assert_eq!(slots.next_free(), Some(1));
        assert_eq!(slots.occupy('e'), Some(1));
        *slots.get_mut(2).expect("busy") = 'f';
        let ids: Vec<(usize, char)> = slots.iter_mut().map(|(id, c)| (id, *c)).collect();
        assert_eq!(ids, [(0, 'a'), (1, 'e'), (2, 'f')]);
        assert_eq!(slots.take_all(), [(0, 'a'), (1, 'e'), (2, 'f')]);
        assert_eq!((slots.busy(), slots.next_free()), (0, Some(0)));
    }
}
