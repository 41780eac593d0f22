//! The `ticket_messages` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "ticket_messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub ticket_id: Uuid,
    pub author: String,
    pub author_id: String,
    pub text: String,
    pub channel: String,
    pub created_at: DateTimeUtc,
    pub position: i64,
    /// The message's files as JSON (`[{"type", "file_id", …}]`), if any.
    pub media: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
