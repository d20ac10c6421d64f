//! The room wall: outputs participants share with the room, shown on a
//! projector page (`/wall`) to everyone logged in, with the author's name.
//! Sharing copies the image out of its author's folders (so the wall keeps
//! it whatever they do with their files, and nobody reads a participant's
//! folders through the wall); an instructor can take an item off it.

use serde_json::json;

use super::{Actor, Room, RoomError, RoomResult};
use crate::auth::SessionUser;
use crate::clock::now_ms;
use crate::store::{AuditEntry, WallItem};

/// How many items one participant may have on the wall at once.
pub const MAX_SHOWN_PER_AUTHOR: u32 = 12;

/// How many items the wall shows (the newest).
pub const WALL_SHOWN: u32 = 120;

/// The largest image that goes on the wall.
pub const MAX_WALL_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// What can go on the wall: images a browser shows.
const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "webp", "gif"];

fn full() -> RoomError {
    RoomError::Conflict(format!(
        "you have {MAX_SHOWN_PER_AUTHOR} images on the wall already; ask your instructor to take one off"
    ))
}

impl Room {
    /// Shares one of `user`'s own files (as `/view` names it) on the wall.
    pub async fn share(
        &self,
        user: &SessionUser,
        filename: Option<&str>,
        kind: Option<&str>,
        subfolder: Option<&str>,
    ) -> RoomResult<WallItem> {
        let target = self
            .shared()
            .workspaces
            .user(&user.name)
            .resolve_view(filename, kind, subfolder)
            .await
            .map_err(RoomError::Files)?;
        let ext = target
            .file_name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .filter(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
            .ok_or_else(|| RoomError::Invalid("only images go on the wall".into()))?;
        if target.size > MAX_WALL_FILE_BYTES {
            return Err(RoomError::Invalid(format!(
                "the image is {} MB; the wall takes images up to {} MB",
                target.size / 1_000_000,
                MAX_WALL_FILE_BYTES / 1_000_000
            )));
        }
        // Checked before the copy too (the insert checks again, atomically),
        // so a participant at the limit costs no copying.
        if self.shared().store.wall_shown_by(user.id).await? >= MAX_SHOWN_PER_AUTHOR {
            return Err(full());
        }
        // Read before the row is made, so an unreadable file makes none.
        let bytes = target
            .source
            .read_at_most(MAX_WALL_FILE_BYTES)
            .await
            .map_err(RoomError::Files)?;
        let id = self
            .shared()
            .store
            .add_wall_item(
                user.id,
                &target.file_name,
                &ext,
                now_ms(),
                MAX_SHOWN_PER_AUTHOR,
            )
            .await?
            .ok_or_else(full)?;
        if let Err(e) = self.wall.keep(id, &ext, bytes).await {
            // The row exists but its image does not: keep it off the wall.
            self.shared()
                .store
                .set_wall_hidden(id, Some("(the copy failed)"), now_ms())
                .await?;
            return Err(RoomError::Files(e));
        }
        tracing::info!(user = %user.name, item = id, "an output was shared on the wall");
        self.shared()
            .store
            .wall_item(id)
            .await?
            .ok_or_else(|| RoomError::NotFound(format!("wall item {id} vanished")))
    }

    /// The wall, newest first; instructors see the hidden items too.
    pub async fn wall(&self, with_hidden: bool) -> RoomResult<Vec<WallItem>> {
        Ok(self
            .shared()
            .store
            .wall_items(WALL_SHOWN, with_hidden)
            .await?)
    }

    /// An item's image, if the caller may see it (hidden items only for
    /// instructors).
    pub async fn wall_image(
        &self,
        id: i64,
        with_hidden: bool,
    ) -> RoomResult<(WallItem, crate::workspace::FileSource)> {
        let item = self
            .shared()
            .store
            .wall_item(id)
            .await?
            .filter(|i| with_hidden || !i.hidden)
            .ok_or_else(|| RoomError::NotFound(format!("no wall item {id}")))?;
        let source = self
            .wall
            .source(item.id, &item.ext)
            .map_err(RoomError::Files)?;
        Ok((item, source))
    }

    /// Takes an item off the wall, or puts it back.
    pub async fn set_wall_hidden(
        &self,
        actor: &Actor,
        id: i64,
        hidden: bool,
    ) -> RoomResult<AuditEntry> {
        let item = self
            .shared()
            .store
            .wall_item(id)
            .await?
            .ok_or_else(|| RoomError::NotFound(format!("no wall item {id}")))?;
        let by = actor.to_string();
        self.shared()
            .store
            .set_wall_hidden(id, hidden.then_some(by.as_str()), now_ms())
            .await?;
        let action = if hidden { "wall.hide" } else { "wall.show" };
        self.audit(
            actor,
            action,
            &id.to_string(),
            json!({"author": item.author.as_str(), "file": item.file_name}),
        )
        .await
    }
}
