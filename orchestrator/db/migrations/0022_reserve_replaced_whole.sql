-- reserve: shipments a whole plan of the order (an amendment's re-plan, a re-decide) gave back.
-- If one ships after all, the work the order holds now for the lines it carried is not needed:
-- what the order holds for them, not the new plan's shipments, is undone, since later plans and
-- repairs may have moved those lines again since.
ALTER TABLE reserve_replaced ADD COLUMN whole boolean NOT NULL DEFAULT false;
